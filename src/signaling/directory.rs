//! The intercom's directory: which names are groups and whom they ring,
//! how many devices a name may have, where a call goes when nobody answers,
//! and who may call whom. Door stations (`kind = "door"`) also name their
//! doors, who may open them without a call, and the program that opens
//! them; any user may have a longest answered call (`max_call`). Read from
//! one TOML file (`--directory`), checked as a whole; no I/O here beyond
//! [`Directory::load`] reading that file.
//!
//! ```
//! use signalbox::signaling::directory::{Directory, Ring};
//! let directory = Directory::parse(
//!     "directory.toml",
//!     r#"
//!     [users.anna]
//!     devices = 4
//!
//!     [groups."flat-12"]
//!     members = ["anna", "ben"]
//!     ring = "in-order"
//!     no_answer = "concierge"
//!
//!     [groups.concierge]
//!     members = ["guard-desk"]
//!     "#,
//! )
//! .unwrap();
//! assert_eq!(directory.devices("anna"), 4);
//! assert_eq!(directory.group("flat-12").unwrap().ring, Ring::InOrder);
//! let bad = Directory::parse("d.toml", "[groups.a]\nmembers = [\"a\"]\n").unwrap_err();
//! assert_eq!(bad.to_string(), "d.toml:1: group \"a\" contains itself");
//! ```

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::config::parse_duration;
use crate::signaling::protocol::valid_user_name;

/// How a group rings its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ring {
    /// Every member at once (`ring = "all"`, the default).
    All,
    /// One member after another, each for the group's `step`
    /// (`ring = "in-order"`).
    InOrder,
}

/// Where a call goes when nobody answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The user or group that rings next (`no_answer`).
    pub to: Rc<str>,
    /// After how long of ringing (`no_answer_after`); `None`: at the ring
    /// timeout.
    pub after: Option<Duration>,
}

/// A ring group (`[groups.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Its members, users or groups, in order (`members`).
    pub members: Vec<Rc<str>>,
    /// All at once or in turn (`ring`).
    pub ring: Ring,
    /// How long each member rings in turn (`step`, default 10 s).
    pub step: Duration,
    /// Where the call goes when nobody answers.
    pub no_answer: Option<Forward>,
}

/// What the directory says about one user (`[users.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// How many sockets may register the name at once (`devices`, default 1).
    pub devices: usize,
    /// The names this user may call (`may_call`, patterns with `*`);
    /// `None`: anyone.
    pub may_call: Option<Vec<Rc<str>>>,
    /// Where a call to this user goes when they do not answer.
    pub no_answer: Option<Forward>,
    /// Its doors, when it is a door station (`kind = "door"`).
    pub door: Option<Door>,
    /// The longest an answered call with this user may last (`max_call`);
    /// `None`: as long as the server allows.
    pub max_call: Option<Duration>,
}

/// A door station's doors and what opens them (`kind = "door"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Door {
    /// The doors it controls (`doors`), in the file's order.
    pub doors: Vec<Rc<str>>,
    /// Who may open them without being in a call with the station
    /// (`openers`, patterns with `*`).
    pub openers: Vec<Rc<str>>,
    /// The program signalbox runs for each opening, then its arguments
    /// (`open_command`).
    pub open_command: Option<Rc<[String]>>,
    /// How long `open_command` may run before it is killed (`open_timeout`).
    pub open_timeout: Duration,
    /// After a door was opened from a call, the call ends this long after
    /// (`hang_up_after_open`).
    pub hang_up_after_open: Option<Duration>,
}

/// The whole directory; the empty one (no file) changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    users: HashMap<Rc<str>, User>,
    groups: HashMap<Rc<str>, Group>,
}

/// The most devices one name may have.
pub const MAX_DEVICES: usize = 32;

/// The most members one group may list (nested groups count their own).
pub const MAX_MEMBERS: usize = 64;

/// The default `step` of an in-order group.
pub const DEFAULT_STEP: Duration = Duration::from_secs(10);

/// The default `open_timeout` of a door station's `open_command`.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The most items (program and arguments) of one `open_command`; more is a
/// mistake, not a relay's command line.
const MAX_COMMAND_ITEMS: usize = 64;

/// The longest item of an `open_command`, in bytes; well under what
/// `execve` takes, so that a command that reads fails here, not at the
/// first opening.
const MAX_COMMAND_ITEM_BYTES: usize = 4096;

/// The keys of `[users.NAME]` that only a door station may have.
const DOOR_KEYS: &[&str] = &[
    "doors",
    "openers",
    "open_command",
    "open_timeout",
    "hang_up_after_open",
];

/// Why a directory file was refused: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryError {
    /// The file, as given.
    pub path: String,
    /// The line (from 1) of what is wrong; 0 when the file could not be read.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for DirectoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path, self.reason)
        } else {
            write!(f, "{}:{}: {}", self.path, self.line, self.reason)
        }
    }
}

impl std::error::Error for DirectoryError {}

/// Turns byte offsets into line numbers for one file's errors.
struct Lines<'a> {
    path: &'a str,
    text: &'a str,
}

impl Lines<'_> {
    fn error(&self, at: usize, reason: impl Into<String>) -> DirectoryError {
        let at = at.min(self.text.len());
        let line = 1 + self.text.as_bytes()[..at]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        DirectoryError {
            path: self.path.to_owned(),
            line,
            reason: reason.into(),
        }
    }

    /// The value of `key` as a string, or why not.
    fn text<'v>(
        &self,
        key: &str,
        value: &'v Spanned<DeValue<'_>>,
    ) -> Result<&'v str, DirectoryError> {
        value.get_ref().as_str().ok_or_else(|| {
            self.error(
                value.span().start,
                format!("{key} must be a string, not {}", value.get_ref().type_str()),
            )
        })
    }

    /// A name (a user's or a group's) at `at`.
    fn name(&self, name: &str, at: usize, what: &str) -> Result<Rc<str>, DirectoryError> {
        if valid_user_name(name) {
            Ok(name.into())
        } else {
            Err(self.error(
                at,
                format!("{what} {name:?} is not a valid name (1 to 64 letters, digits, _ - . @)"),
            ))
        }
    }

    /// The list of strings of `key`, each with where it is.
    fn texts<'v>(
        &self,
        key: &str,
        value: &'v Spanned<DeValue<'_>>,
    ) -> Result<Vec<(&'v str, usize)>, DirectoryError> {
        let array = value.get_ref().as_array().ok_or_else(|| {
            self.error(value.span().start, format!("{key} must be a list of names"))
        })?;
        array
            .iter()
            .map(|item| Ok((self.text(key, item)?, item.span().start)))
            .collect()
    }

    fn duration(
        &self,
        key: &str,
        value: &Spanned<DeValue<'_>>,
    ) -> Result<Duration, DirectoryError> {
        let at = value.span().start;
        match parse_duration(self.text(key, value)?) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(self.error(at, format!("{key} must be longer than 0s"))),
            Err(error) => Err(self.error(at, format!("{key}: {error}"))),
        }
    }

    /// `no_answer` and `no_answer_after` of one table.
    fn forward(&self, keys: &Keys<'_, '_>) -> Result<Option<Forward>, DirectoryError> {
        match (keys.get("no_answer"), keys.get("no_answer_after")) {
            (None, None) => Ok(None),
            (None, Some(after)) => {
                Err(self.error(after.span().start, "no_answer_after needs no_answer"))
            }
            (Some(to), after) => Ok(Some(Forward {
                to: self.name(self.text("no_answer", to)?, to.span().start, "no_answer")?,
                after: after
                    .map(|a| self.duration("no_answer_after", a))
                    .transpose()?,
            })),
        }
    }

    /// `kind` and the door keys of user `id` (whose table is at `at`): its
    /// [`Door`] when it is a door station, and no door key when it is not.
    fn door(
        &self,
        id: &str,
        at: usize,
        keys: &Keys<'_, '_>,
    ) -> Result<Option<Door>, DirectoryError> {
        let station = match keys.get("kind") {
            None => false,
            Some(kind) => match self.text("kind", kind)? {
                "door" => true,
                "user" => false,
                other => {
                    return Err(self.error(
                        kind.span().start,
                        format!("kind must be \"door\" or \"user\", not {other:?}"),
                    ));
                }
            },
        };
        if !station {
            // The table iterates in key order, not the file's: report the
            // door key that comes first in the file, the one a reader meets.
            let first = keys
                .0
                .iter()
                .map(|(key, _)| key)
                .filter(|key| DOOR_KEYS.contains(&key.get_ref().as_ref()))
                .min_by_key(|key| key.span().start);
            return match first {
                Some(key) => Err(self.error(
                    key.span().start,
                    format!(
                        "{} is for door stations: add kind = \"door\"",
                        key.get_ref()
                    ),
                )),
                None => Ok(None),
            };
        }
        let mut doors: Vec<Rc<str>> = Vec::new();
        if let Some(listed) = keys.get("doors") {
            for (door, at) in self.texts("doors", listed)? {
                let door = self.name(door, at, "door")?;
                if doors.contains(&door) {
                    return Err(self.error(at, format!("door {door:?} is listed twice")));
                }
                doors.push(door);
            }
        }
        if doors.is_empty() {
            // Missing or empty alike: a station that opens nothing is a
            // typo, and the table is where the key belongs.
            return Err(self.error(at, format!("door station {id:?} needs doors")));
        }
        let openers = match keys.get("openers") {
            None => Vec::new(),
            Some(patterns) => self
                .texts("openers", patterns)?
                .into_iter()
                .map(|(p, at)| pattern(self, "openers", p, at))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let open_command = keys
            .get("open_command")
            .map(|command| self.command(command))
            .transpose()?;
        let open_timeout = match keys.get("open_timeout") {
            Some(timeout) => self.duration("open_timeout", timeout)?,
            None => DEFAULT_OPEN_TIMEOUT,
        };
        let hang_up_after_open = keys
            .get("hang_up_after_open")
            .map(|after| self.duration("hang_up_after_open", after))
            .transpose()?;
        Ok(Some(Door {
            doors,
            openers,
            open_command,
            open_timeout,
            hang_up_after_open,
        }))
    }

    /// An `open_command`: the program's absolute path, then its arguments.
    /// Run without a shell and without a search of `PATH`, hence absolute.
    fn command(&self, value: &Spanned<DeValue<'_>>) -> Result<Rc<[String]>, DirectoryError> {
        let at = value.span().start;
        let array = value.get_ref().as_array().ok_or_else(|| {
            self.error(
                at,
                "open_command must be a list of strings: the program, then its arguments",
            )
        })?;
        if array.len() > MAX_COMMAND_ITEMS {
            return Err(self.error(
                at,
                format!(
                    "open_command has {} items, more than {MAX_COMMAND_ITEMS}",
                    array.len()
                ),
            ));
        }
        let mut items = Vec::with_capacity(array.len());
        for item in array.iter() {
            let item_at = item.span().start;
            let text = self.text("open_command", item)?;
            // A NUL cannot be passed to execve: it would cut the argument.
            if text.contains('\0') {
                return Err(self.error(item_at, "open_command items must not contain a NUL byte"));
            }
            if text.len() > MAX_COMMAND_ITEM_BYTES {
                return Err(self.error(
                    item_at,
                    format!("open_command items must be at most {MAX_COMMAND_ITEM_BYTES} bytes"),
                ));
            }
            if items.is_empty() && !text.starts_with('/') {
                return Err(self.error(
                    item_at,
                    "open_command must start with the program's absolute path",
                ));
            }
            items.push(text.to_owned());
        }
        if items.is_empty() {
            return Err(self.error(
                at,
                "open_command must start with the program's absolute path",
            ));
        }
        Ok(items.into())
    }

    /// The keys of the table `value` (at `[section.name]`), each checked
    /// against `allowed`.
    fn keys<'v, 'i>(
        &self,
        section: &str,
        name: &str,
        value: &'v Spanned<DeValue<'i>>,
        allowed: &[&str],
    ) -> Result<Keys<'v, 'i>, DirectoryError> {
        let table = value.get_ref().as_table().ok_or_else(|| {
            self.error(
                value.span().start,
                format!("{section}.{name} must be a table"),
            )
        })?;
        for (key, _) in table.iter() {
            if !allowed.contains(&key.get_ref().as_ref()) {
                return Err(self.error(
                    key.span().start,
                    format!(
                        "unknown key `{}` in [{section}.{name}]: expected one of {}",
                        key.get_ref(),
                        allowed.join(", ")
                    ),
                ));
            }
        }
        Ok(Keys(table))
    }
}

/// One table of the file, its keys already checked.
struct Keys<'v, 'i>(&'v DeTable<'i>);

impl<'v, 'i> Keys<'v, 'i> {
    fn get(&self, key: &str) -> Option<&'v Spanned<DeValue<'i>>> {
        self.0.get(key)
    }
}

/// Whether `name` matches `pattern`, where `*` stands for any run of
/// characters (none included).
///
/// ```
/// use signalbox::signaling::directory::matches;
/// assert!(matches("flat-*", "flat-12"));
/// assert!(matches("*", "anyone"));
/// assert!(matches("guard-*-phone", "guard-a-phone"));
/// assert!(!matches("flat-*", "flatmate"));
/// ```
pub fn matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return name.is_empty();
    };
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

impl Directory {
    /// Reads and checks the directory file at `path`.
    pub fn load(path: &Path) -> Result<Directory, DirectoryError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| DirectoryError {
            path: shown.clone(),
            line: 0,
            reason: format!("cannot be read: {error}"),
        })?;
        Directory::parse(&shown, &text)
    }

    /// Checks the directory `text` (read from `path`, which errors name).
    pub fn parse(path: &str, text: &str) -> Result<Directory, DirectoryError> {
        let lines = Lines { path, text };
        let root = DeTable::parse(text).map_err(|error| {
            let at = error.span().map_or(0, |span| span.start);
            lines.error(at, error.message().trim_end().to_owned())
        })?;
        let mut sections = [None, None];
        for (key, value) in root.get_ref().iter() {
            let slot = match key.get_ref().as_ref() {
                "users" => 0,
                "groups" => 1,
                other => {
                    return Err(lines.error(
                        key.span().start,
                        format!("unknown section `{other}`: expected users or groups"),
                    ));
                }
            };
            let table = value.get_ref().as_table().ok_or_else(|| {
                lines.error(
                    key.span().start,
                    format!("{} must be a table", key.get_ref()),
                )
            })?;
            sections[slot] = Some(table);
        }
        let mut directory = Directory::default();
        let mut places: HashMap<Rc<str>, usize> = HashMap::new();
        for (key, value) in sections[0].into_iter().flat_map(|t| t.iter()) {
            let at = key.span().start;
            let id = lines.name(key.get_ref(), at, "user")?;
            let keys = lines.keys(
                "users",
                &id,
                value,
                &[
                    "devices",
                    "may_call",
                    "no_answer",
                    "no_answer_after",
                    "kind",
                    "doors",
                    "openers",
                    "open_command",
                    "open_timeout",
                    "hang_up_after_open",
                    "max_call",
                ],
            )?;
            let devices = match keys.get("devices") {
                None => 1,
                Some(n) => {
                    let count = n
                        .get_ref()
                        .as_integer()
                        .and_then(|i| i64::from_str_radix(i.as_str(), i.radix()).ok())
                        .and_then(|i| usize::try_from(i).ok());
                    match count {
                        Some(n) if (1..=MAX_DEVICES).contains(&n) => n,
                        _ => {
                            return Err(lines.error(
                                n.span().start,
                                format!("devices must be a whole number from 1 to {MAX_DEVICES}"),
                            ));
                        }
                    }
                }
            };
            let may_call = match keys.get("may_call") {
                None => None,
                Some(patterns) => Some(
                    lines
                        .texts("may_call", patterns)?
                        .into_iter()
                        .map(|(p, at)| pattern(&lines, "may_call", p, at))
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            let no_answer = lines.forward(&keys)?;
            let door = lines.door(&id, at, &keys)?;
            let max_call = keys
                .get("max_call")
                .map(|max| lines.duration("max_call", max))
                .transpose()?;
            places.insert(id.clone(), at);
            directory.users.insert(
                id,
                User {
                    devices,
                    may_call,
                    no_answer,
                    door,
                    max_call,
                },
            );
        }
        for (key, value) in sections[1].into_iter().flat_map(|t| t.iter()) {
            let at = key.span().start;
            let id = lines.name(key.get_ref(), at, "group")?;
            if directory.users.contains_key(&id) {
                return Err(lines.error(
                    at,
                    format!("{id:?} is both a user and a group: a name is one or the other"),
                ));
            }
            let keys = lines.keys(
                "groups",
                &id,
                value,
                &["members", "ring", "step", "no_answer", "no_answer_after"],
            )?;
            let Some(listed) = keys.get("members") else {
                return Err(lines.error(at, format!("group {id:?} needs members")));
            };
            let members = lines
                .texts("members", listed)?
                .into_iter()
                .map(|(m, at)| lines.name(m, at, "member"))
                .collect::<Result<Vec<_>, _>>()?;
            if members.is_empty() {
                return Err(
                    lines.error(listed.span().start, format!("group {id:?} has no members"))
                );
            }
            let ring = match keys.get("ring") {
                None => Ring::All,
                Some(ring) => match lines.text("ring", ring)? {
                    "all" => Ring::All,
                    "in-order" => Ring::InOrder,
                    other => {
                        return Err(lines.error(
                            ring.span().start,
                            format!("ring must be \"all\" or \"in-order\", not {other:?}"),
                        ));
                    }
                },
            };
            let step = match keys.get("step") {
                Some(step) => lines.duration("step", step)?,
                None => DEFAULT_STEP,
            };
            let no_answer = lines.forward(&keys)?;
            places.insert(id.clone(), at);
            directory.groups.insert(
                id,
                Group {
                    members,
                    ring,
                    step,
                    no_answer,
                },
            );
        }
        directory.check(&lines, &places)?;
        Ok(directory)
    }

    /// What can only be checked once everything is read: groups inside
    /// themselves, member counts, forwarding cycles.
    fn check(
        &self,
        lines: &Lines<'_>,
        places: &HashMap<Rc<str>, usize>,
    ) -> Result<(), DirectoryError> {
        let mut names: Vec<&Rc<str>> = self.groups.keys().chain(self.users.keys()).collect();
        names.sort_unstable_by_key(|name| places.get(*name));
        for name in &names {
            let at = places.get(*name).copied().unwrap_or(0);
            if self.groups.contains_key(*name) {
                let mut path = vec![(*name).clone()];
                if self.contains(name, &mut path) {
                    let through = path[1..path.len() - 1]
                        .iter()
                        .map(|n| format!("{n:?}"))
                        .collect::<Vec<_>>();
                    let reason = if through.is_empty() {
                        format!("group {name:?} contains itself")
                    } else {
                        format!(
                            "group {name:?} contains itself through {}",
                            through.join(", ")
                        )
                    };
                    return Err(lines.error(at, reason));
                }
                let count = self.members_of(name).len();
                if count > MAX_MEMBERS {
                    return Err(lines.error(
                        at,
                        format!("group {name:?} rings {count} users, more than {MAX_MEMBERS}"),
                    ));
                }
            }
            let mut seen = vec![(*name).clone()];
            let mut next = self.no_answer(name).map(|f| f.to.clone());
            while let Some(to) = next {
                if seen.contains(&to) {
                    seen.push(to);
                    let chain = seen.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>();
                    return Err(
                        lines.error(at, format!("forwarding cycle: {}", chain.join(" -> ")))
                    );
                }
                next = self.no_answer(&to).map(|f| f.to.clone());
                seen.push(to);
            }
        }
        Ok(())
    }

    /// Whether group `path.last()` contains `path[0]`, directly or through
    /// its groups; `path` ends with the way there when it does.
    fn contains(&self, target: &str, path: &mut Vec<Rc<str>>) -> bool {
        let Some(group) = path.last().and_then(|last| self.groups.get(last)) else {
            return false;
        };
        for member in &group.members {
            if **member == *target {
                path.push(member.clone());
                return true;
            }
            if self.groups.contains_key(member) && !path.contains(member) {
                path.push(member.clone());
                if self.contains(target, path) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }

    /// Whether the directory says anything at all.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }

    /// How many users the directory has settings for.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.get(name)
    }

    /// Every group, sorted by name.
    pub fn groups(&self) -> Vec<(&Rc<str>, &Group)> {
        let mut groups: Vec<_> = self.groups.iter().collect();
        groups.sort_unstable_by(|a, b| a.0.cmp(b.0));
        groups
    }

    /// The users group `name` rings, in order, its groups' members in their
    /// place, each once. Empty for a name that is not a group.
    pub fn members_of(&self, name: &str) -> Vec<Rc<str>> {
        let mut out = Vec::new();
        let mut visited = Vec::new();
        self.collect(name, &mut out, &mut visited);
        out
    }

    fn collect(&self, name: &str, out: &mut Vec<Rc<str>>, visited: &mut Vec<Rc<str>>) {
        let Some(group) = self.groups.get(name) else {
            return;
        };
        for member in &group.members {
            if self.groups.contains_key(member) {
                if !visited.contains(member) {
                    visited.push(member.clone());
                    self.collect(member, out, visited);
                }
            } else if !out.contains(member) {
                out.push(member.clone());
            }
        }
    }

    /// How many devices `user` may register at once.
    pub fn devices(&self, user: &str) -> usize {
        self.users.get(user).map_or(1, |u| u.devices)
    }

    /// Where a call to `name` (a user or group) goes when nobody answers.
    pub fn no_answer(&self, name: &str) -> Option<&Forward> {
        match self.groups.get(name) {
            Some(group) => group.no_answer.as_ref(),
            None => self.users.get(name)?.no_answer.as_ref(),
        }
    }

    /// Whether `caller` may call `name`.
    pub fn may_call(&self, caller: &str, name: &str) -> bool {
        match self.users.get(caller).and_then(|u| u.may_call.as_ref()) {
            None => true,
            Some(patterns) => patterns.iter().any(|p| matches(p, name)),
        }
    }

    /// The door station called `station`; `None` for any other name.
    pub fn door(&self, station: &str) -> Option<&Door> {
        self.users.get(station)?.door.as_ref()
    }

    /// The door station called `station`, if it controls `door`.
    pub fn door_of(&self, station: &str, door: &str) -> Option<&Door> {
        self.door(station)
            .filter(|spec| spec.doors.iter().any(|d| **d == *door))
    }

    /// The longest an answered call with `user` may last, by the directory;
    /// `None`: it says nothing.
    pub fn max_call(&self, user: &str) -> Option<Duration> {
        self.users.get(user)?.max_call
    }

    /// The groups and the users `caller` may call, each sorted by name:
    /// every group and every user the file names (with settings or as a
    /// member), but not door stations, nor `caller`. What a door panel
    /// offers as buttons.
    pub fn callable_by(&self, caller: &str) -> (Vec<Rc<str>>, Vec<Rc<str>>) {
        let allowed = |name: &&Rc<str>| ***name != *caller && self.may_call(caller, name);
        let mut groups: Vec<Rc<str>> = self.groups.keys().filter(allowed).cloned().collect();
        let mut users: Vec<Rc<str>> = self
            .users
            .iter()
            .filter(|(_, user)| user.door.is_none())
            .map(|(name, _)| name)
            .chain(self.groups.values().flat_map(|g| g.members.iter()))
            .filter(|name| !self.groups.contains_key(*name) && self.door(name).is_none())
            .filter(allowed)
            .cloned()
            .collect();
        groups.sort_unstable();
        users.sort_unstable();
        users.dedup();
        (groups, users)
    }

    /// Every door station, sorted by name.
    pub fn stations(&self) -> Vec<(&Rc<str>, &Door)> {
        let mut stations: Vec<_> = self
            .users
            .iter()
            .filter_map(|(name, user)| Some((name, user.door.as_ref()?)))
            .collect();
        stations.sort_unstable_by(|a, b| a.0.cmp(b.0));
        stations
    }
}

/// A name pattern of `key` (`may_call`, `openers`): name characters and `*`.
fn pattern(lines: &Lines<'_>, key: &str, text: &str, at: usize) -> Result<Rc<str>, DirectoryError> {
    let literal = text.replace('*', "");
    if text.is_empty() || (!literal.is_empty() && !valid_user_name(&literal)) {
        return Err(lines.error(
            at,
            format!("{key} pattern {text:?} is not a name with * for any characters"),
        ));
    }
    Ok(text.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        Directory::parse("d.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn the_issue_example_reads() {
        let d = Directory::parse(
            "d.toml",
            r#"
[users.anna]
devices = 4                 # up to 4 sockets may register "anna" at once

[groups."flat-12"]
members = ["anna", "ben", "flat-12-panel"]
ring = "all"
step = "10s"
no_answer = "concierge"
no_answer_after = "20s"

[groups.concierge]
members = ["guard-desk", "guard-phone"]

[users.front-door]
may_call = ["flat-*", "concierge"]   # name patterns; default: anyone
"#,
        )
        .unwrap();
        assert_eq!(d.devices("anna"), 4);
        assert_eq!(d.devices("ben"), 1);
        let flat = d.group("flat-12").unwrap();
        assert_eq!(flat.ring, Ring::All);
        assert_eq!(
            flat.no_answer,
            Some(Forward {
                to: "concierge".into(),
                after: Some(Duration::from_secs(20))
            })
        );
        assert_eq!(
            d.members_of("flat-12")
                .iter()
                .map(|m| &**m)
                .collect::<Vec<_>>(),
            ["anna", "ben", "flat-12-panel"]
        );
        assert!(d.may_call("front-door", "flat-12"));
        assert!(d.may_call("front-door", "concierge"));
        assert!(!d.may_call("front-door", "anna"));
        assert!(d.may_call("anna", "front-door"));
        assert!(Directory::parse("d.toml", "").unwrap().is_empty());
    }

    #[test]
    fn the_shipped_example_reads_commented_and_not() {
        let example = include_str!("../../systemd/directory.toml");
        assert!(Directory::parse("example", example).unwrap().is_empty());
        let uncommented: String = example
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest) if rest.starts_with('[') || rest.contains(" = ") => rest,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let d = Directory::parse("example", &uncommented).unwrap();
        assert_eq!(d.devices("anna"), 4);
        assert_eq!(d.members_of("flat-12").len(), 3);
        assert!(!d.may_call("front-door", "anna"));
        let door = d.door("front-door").unwrap();
        assert_eq!(door.doors, [Rc::from("main"), Rc::from("garage")]);
        assert_eq!(door.openers, [Rc::from("concierge"), Rc::from("guard-*")]);
        assert_eq!(
            door.open_command.as_deref(),
            Some(&["/usr/local/bin/relay".to_owned(), "main".to_owned()][..])
        );
        assert_eq!(door.open_timeout, Duration::from_secs(10));
        assert_eq!(door.hang_up_after_open, Some(Duration::from_secs(5)));
        assert_eq!(d.max_call("front-door"), Some(Duration::from_secs(120)));
    }

    #[test]
    fn a_door_station_reads() {
        let d = Directory::parse(
            "d.toml",
            r#"
[users.front-door]
kind = "door"
doors = ["main", "garage"]
openers = ["concierge", "guard-*"]
open_command = ["/usr/local/bin/relay", "main"]
open_timeout = "3s"
hang_up_after_open = "5s"
max_call = "2m"
may_call = ["flat-*"]

[users.anna]
kind = "user"
max_call = "30m"
"#,
        )
        .unwrap();
        assert_eq!(
            d.door("front-door"),
            Some(&Door {
                doors: vec!["main".into(), "garage".into()],
                openers: vec!["concierge".into(), "guard-*".into()],
                open_command: Some(
                    vec!["/usr/local/bin/relay".to_owned(), "main".to_owned()].into()
                ),
                open_timeout: Duration::from_secs(3),
                hang_up_after_open: Some(Duration::from_secs(5)),
            })
        );
        assert_eq!(d.max_call("front-door"), Some(Duration::from_secs(120)));
        assert!(!d.may_call("front-door", "anna"));
        assert_eq!(d.door("anna"), None);
        assert_eq!(d.max_call("anna"), Some(Duration::from_secs(1800)));
        assert_eq!(d.door("nobody"), None);
        assert_eq!(d.max_call("nobody"), None);
    }

    #[test]
    fn a_door_station_has_defaults() {
        let d = Directory::parse(
            "d.toml",
            "[users.gate]\nkind = \"door\"\ndoors = [\"gate\"]\n",
        )
        .unwrap();
        assert_eq!(
            d.door("gate"),
            Some(&Door {
                doors: vec!["gate".into()],
                openers: Vec::new(),
                open_command: None,
                open_timeout: DEFAULT_OPEN_TIMEOUT,
                hang_up_after_open: None,
            })
        );
        assert_eq!(DEFAULT_OPEN_TIMEOUT, Duration::from_secs(10));
        assert_eq!(d.max_call("gate"), None);
        assert_eq!(d.devices("gate"), 1);
        assert!(!d.is_empty());
    }

    #[test]
    fn stations_are_sorted_by_name_and_only_doors() {
        let d = Directory::parse(
            "d.toml",
            r#"
[users.side]
kind = "door"
doors = ["side"]
[users.anna]
max_call = "1m"
[users.back]
kind = "door"
doors = ["back", "bins"]
[users.front]
kind = "door"
doors = ["main"]
[groups.flat]
members = ["anna"]
"#,
        )
        .unwrap();
        let stations: Vec<(&str, Vec<&str>)> = d
            .stations()
            .into_iter()
            .map(|(name, door)| (&**name, door.doors.iter().map(|d| &**d).collect()))
            .collect();
        assert_eq!(
            stations,
            [
                ("back", vec!["back", "bins"]),
                ("front", vec!["main"]),
                ("side", vec!["side"]),
            ]
        );
        assert!(Directory::default().stations().is_empty());
    }

    #[test]
    fn a_panel_offers_what_its_caller_may_call() {
        let d = Directory::parse(
            "d.toml",
            r#"
[users.front]
kind = "door"
doors = ["main"]
may_call = ["flat-*", "concierge", "guard-desk"]
[users.back]
kind = "door"
doors = ["back"]
[users.anna]
max_call = "1m"
[groups.flat-2]
members = ["carl"]
[groups.flat-1]
members = ["anna", "ben", "back"]
[groups.concierge]
members = ["guard-desk", "flat-1"]
"#,
        )
        .unwrap();
        let names = |list: Vec<Rc<str>>| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let (groups, users) = d.callable_by("front");
        assert_eq!(names(groups), ["concierge", "flat-1", "flat-2"]);
        assert_eq!(names(users), ["guard-desk"]);
        // Anyone: every group and user the file names, but no station and
        // not the caller.
        let (groups, users) = d.callable_by("anna");
        assert_eq!(names(groups), ["concierge", "flat-1", "flat-2"]);
        assert_eq!(names(users), ["ben", "carl", "guard-desk"]);
        assert_eq!(Directory::default().callable_by("x"), (vec![], vec![]));
    }

    #[test]
    fn nested_groups_ring_each_user_once_in_order() {
        let d = Directory::parse(
            "d.toml",
            r#"
[groups.all]
members = ["a", "inner", "b", "inner2"]
[groups.inner]
members = ["c", "a", "inner2"]
[groups.inner2]
members = ["d", "c"]
"#,
        )
        .unwrap();
        let members: Vec<String> = d.members_of("all").iter().map(|m| m.to_string()).collect();
        assert_eq!(members, ["a", "c", "d", "b"]);
        assert!(d.members_of("a").is_empty());
    }

    #[test]
    fn bad_files_are_refused_with_line_and_reason() {
        let table: &[(&str, &str)] = &[
            (
                "[users.a]\nphone = 1\n",
                "d.toml:2: unknown key `phone` in [users.a]: expected one of devices,",
            ),
            (
                "[people.a]\n",
                "d.toml:1: unknown section `people`: expected users or groups",
            ),
            (
                "[users.a]\ndevices = 0\n",
                "d.toml:2: devices must be a whole number from 1 to 32",
            ),
            (
                "[users.a]\ndevices = 33\n",
                "d.toml:2: devices must be a whole number from 1 to 32",
            ),
            (
                "[users.a]\ndevices = \"2\"\n",
                "d.toml:2: devices must be a whole number",
            ),
            (
                "[users.a]\ndevices = 2.5\n",
                "d.toml:2: devices must be a whole number",
            ),
            (
                "[users.a]\nmay_call = \"b\"\n",
                "d.toml:2: may_call must be a list of names",
            ),
            (
                "[users.a]\nmay_call = [1]\n",
                "d.toml:2: may_call must be a string, not integer",
            ),
            ("users = 1\n", "d.toml:1: users must be a table"),
            ("[groups]\ng = 1\n", "d.toml:2: groups.g must be a table"),
            (
                "\n[groups.g]\nmembers = [\"a\"]\nstep = \"ten\"\n",
                "d.toml:4: step: invalid duration",
            ),
            (
                "[groups.g]\nmembers = [\"a\"]\nstep = \"0s\"\n",
                "d.toml:3: step must be longer than 0s",
            ),
            (
                "[groups.g]\nmembers = [\"a\"]\nring = \"random\"\n",
                "d.toml:3: ring must be \"all\" or \"in-order\", not \"random\"",
            ),
            (
                "[groups.g]\nmembers = [\"a b\"]\n",
                "d.toml:2: member \"a b\" is not a valid name",
            ),
            (
                "[users.\"a/b\"]\n",
                "d.toml:1: user \"a/b\" is not a valid name",
            ),
            (
                "[groups.g]\nmembers = []\n",
                "d.toml:2: group \"g\" has no members",
            ),
            (
                "[groups.g]\nring = \"all\"\n",
                "d.toml:1: group \"g\" needs members",
            ),
            (
                "[users.g]\n[groups.g]\nmembers = [\"a\"]\n",
                "d.toml:2: \"g\" is both a user and a group",
            ),
            (
                "[groups.g]\nmembers = [\"g\"]\n",
                "d.toml:1: group \"g\" contains itself",
            ),
            (
                "[groups.g]\nmembers = [\"h\"]\n[groups.h]\nmembers = [\"i\"]\n[groups.i]\nmembers = [\"g\"]\n",
                "d.toml:1: group \"g\" contains itself through \"h\", \"i\"",
            ),
            (
                "[groups.g]\nmembers = [\"a\"]\nno_answer = \"h\"\n\n[groups.h]\nmembers = [\"b\"]\nno_answer = \"g\"\n",
                "d.toml:1: forwarding cycle: \"g\" -> \"h\" -> \"g\"",
            ),
            (
                "[users.a]\nno_answer = \"a\"\n",
                "d.toml:1: forwarding cycle: \"a\" -> \"a\"",
            ),
            (
                "[users.a]\nno_answer = \"b\"\nno_answer_after = \"soon\"\n",
                "d.toml:3: no_answer_after: invalid duration",
            ),
            (
                "\n[users.a]\nno_answer_after = \"5s\"\n",
                "d.toml:3: no_answer_after needs no_answer",
            ),
            (
                "[users.a]\nmay_call = [\"flat-*\", \"a b*\"]\n",
                "d.toml:2: may_call pattern \"a b*\" is not a name",
            ),
            ("[users.a\n", "d.toml:1: "),
            (
                "[users.a]\ndevices = 2\ndevices = 3\n",
                "d.toml:3: duplicate key",
            ),
        ];
        for (text, expected) in table {
            let got = error(text);
            assert!(
                got.starts_with(expected),
                "{text:?}: got {got:?}, expected {expected:?}"
            );
        }
    }

    /// Each `(file, error)` of `table` is refused with exactly that error.
    fn refused(table: &[(&str, &str)]) {
        for (text, expected) in table {
            assert_eq!(error(text), *expected, "{text:?}");
        }
    }

    /// A door station's table, line 1 to 3, then `rest` from line 4.
    fn station(rest: &str) -> String {
        format!("[users.d]\nkind = \"door\"\ndoors = [\"main\"]\n{rest}")
    }

    #[test]
    fn kind_must_be_door_or_user() {
        refused(&[
            (
                "[users.d]\nkind = \"gate\"\n",
                "d.toml:2: kind must be \"door\" or \"user\", not \"gate\"",
            ),
            (
                "[users.d]\nkind = 1\n",
                "d.toml:2: kind must be a string, not integer",
            ),
        ]);
    }

    #[test]
    fn door_keys_need_kind_door() {
        refused(&[
            (
                "[users.d]\ndevices = 2\ndoors = [\"main\"]\n",
                "d.toml:3: doors is for door stations: add kind = \"door\"",
            ),
            (
                "[users.d]\nkind = \"user\"\nopeners = [\"a\"]\n",
                "d.toml:3: openers is for door stations: add kind = \"door\"",
            ),
            (
                "[users.d]\nopen_command = [\"/bin/true\"]\n",
                "d.toml:2: open_command is for door stations: add kind = \"door\"",
            ),
            (
                "[users.d]\n\nopen_timeout = \"1s\"\n",
                "d.toml:3: open_timeout is for door stations: add kind = \"door\"",
            ),
            (
                "[users.d]\nhang_up_after_open = \"1s\"\ndoors = [\"main\"]\n",
                "d.toml:2: hang_up_after_open is for door stations: add kind = \"door\"",
            ),
        ]);
    }

    #[test]
    fn a_door_station_needs_doors() {
        refused(&[
            (
                "\n[users.d]\nkind = \"door\"\n",
                "d.toml:2: door station \"d\" needs doors",
            ),
            (
                "[users.d]\nkind = \"door\"\ndoors = []\n",
                "d.toml:1: door station \"d\" needs doors",
            ),
            (
                "[users.d]\nkind = \"door\"\ndoors = \"main\"\n",
                "d.toml:3: doors must be a list of names",
            ),
        ]);
    }

    #[test]
    fn doors_are_names_each_listed_once() {
        refused(&[
            (
                "[users.d]\nkind = \"door\"\ndoors = [\"main\",\n  \"back door\"]\n",
                "d.toml:4: door \"back door\" is not a valid name \
                 (1 to 64 letters, digits, _ - . @)",
            ),
            (
                "[users.d]\nkind = \"door\"\ndoors = [\"main\", \"back\",\n  \"main\"]\n",
                "d.toml:4: door \"main\" is listed twice",
            ),
        ]);
    }

    #[test]
    fn openers_are_patterns() {
        refused(&[
            (
                &station("openers = [\"guard-*\", \"a b\"]\n"),
                "d.toml:4: openers pattern \"a b\" is not a name with * for any characters",
            ),
            (
                &station("openers = [\"\"]\n"),
                "d.toml:4: openers pattern \"\" is not a name with * for any characters",
            ),
            (
                &station("openers = \"guard-*\"\n"),
                "d.toml:4: openers must be a list of names",
            ),
        ]);
    }

    #[test]
    fn open_command_starts_with_an_absolute_path() {
        refused(&[
            (
                &station("open_command = \"/bin/relay\"\n"),
                "d.toml:4: open_command must be a list of strings: the program, then its arguments",
            ),
            (
                &station("open_command = []\n"),
                "d.toml:4: open_command must start with the program's absolute path",
            ),
            (
                &station("open_command = [\n  \"relay\", \"main\"]\n"),
                "d.toml:5: open_command must start with the program's absolute path",
            ),
            (
                &station("open_command = [\"/bin/relay\", 1]\n"),
                "d.toml:4: open_command must be a string, not integer",
            ),
        ]);
    }

    #[test]
    fn open_command_items_are_bounded() {
        let long = "x".repeat(MAX_COMMAND_ITEM_BYTES + 1);
        let many: Vec<String> = (0..MAX_COMMAND_ITEMS)
            .map(|i| format!("\"a{i}\""))
            .collect();
        refused(&[
            (
                &station("open_command = [\"/bin/relay\",\n  \"a\\u0000b\"]\n"),
                "d.toml:5: open_command items must not contain a NUL byte",
            ),
            (
                &station(&format!("open_command = [\"/bin/relay\",\n  \"{long}\"]\n")),
                "d.toml:5: open_command items must be at most 4096 bytes",
            ),
            (
                &station(&format!(
                    "open_command = [\"/bin/relay\", {}]\n",
                    many.join(", ")
                )),
                "d.toml:4: open_command has 65 items, more than 64",
            ),
        ]);
        // Exactly at the limits is fine.
        let at_limit = format!(
            "open_command = [\"/{}\", {}]\n",
            "x".repeat(MAX_COMMAND_ITEM_BYTES - 1),
            many[1..].join(", ")
        );
        let d = Directory::parse("d.toml", &station(&at_limit)).unwrap();
        let command = d.door("d").unwrap().open_command.clone().unwrap();
        assert_eq!(command.len(), MAX_COMMAND_ITEMS);
        assert_eq!(command[0].len(), MAX_COMMAND_ITEM_BYTES);
    }

    #[test]
    fn door_durations_are_longer_than_zero() {
        refused(&[
            (
                &station("open_timeout = \"0s\"\n"),
                "d.toml:4: open_timeout must be longer than 0s",
            ),
            (
                &station("open_timeout = \"soon\"\n"),
                &format!(
                    "d.toml:4: open_timeout: {}",
                    parse_duration("soon").unwrap_err()
                ),
            ),
            (
                &station("hang_up_after_open = \"0s\"\n"),
                "d.toml:4: hang_up_after_open must be longer than 0s",
            ),
            (
                &station("hang_up_after_open = 5\n"),
                "d.toml:4: hang_up_after_open must be a string, not integer",
            ),
            (
                "[users.a]\nmax_call = \"0s\"\n",
                "d.toml:2: max_call must be longer than 0s",
            ),
            (
                "[users.a]\nmax_call = \"long\"\n",
                &format!(
                    "d.toml:2: max_call: {}",
                    parse_duration("long").unwrap_err()
                ),
            ),
        ]);
    }

    #[test]
    fn unknown_user_keys_list_the_door_keys() {
        refused(&[(
            "[users.a]\nopen = \"now\"\n",
            "d.toml:2: unknown key `open` in [users.a]: expected one of devices, may_call, \
             no_answer, no_answer_after, kind, doors, openers, open_command, open_timeout, \
             hang_up_after_open, max_call",
        )]);
    }

    #[test]
    fn a_group_listing_too_many_users_is_refused() {
        let members: Vec<String> = (0..=MAX_MEMBERS).map(|i| format!("\"u{i}\"")).collect();
        let text = format!("[groups.big]\nmembers = [{}]\n", members.join(", "));
        assert_eq!(
            error(&text),
            format!("d.toml:1: group \"big\" rings 65 users, more than {MAX_MEMBERS}")
        );
    }

    #[test]
    fn a_missing_file_is_an_error_without_a_line() {
        let error = Directory::load(Path::new("/nonexistent/directory.toml")).unwrap_err();
        assert_eq!(error.line, 0);
        assert!(
            error
                .to_string()
                .starts_with("/nonexistent/directory.toml: cannot be read")
        );
    }

    #[test]
    fn patterns() {
        for (p, n, m) in [
            ("*", "", true),
            ("a*", "a", true),
            ("*a", "ba", true),
            ("*a", "ab", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("ab*ba", "aba", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(matches(p, n), m, "{p} ~ {n}");
        }
    }
}
