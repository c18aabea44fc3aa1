//! What the hub keeps that must outlive a restart (push subscriptions and
//! missed calls), as one value the I/O side writes to the state
//! directory and reads back at start.

use std::collections::BTreeMap;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use super::Hub;
use super::missed::{MAX_MISSED, MAX_MISSED_PER_USER};
use super::pushes::{MAX_SUBSCRIPTIONS, MAX_SUBSCRIPTIONS_PER_USER};
use crate::push::Subscription;
use crate::push::subscription::Keys;
use crate::signaling::protocol::{MissedCall, valid_user_name};

/// Push subscriptions and missed calls, by user.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// Each user's push subscriptions (`{endpoint, keys}`), oldest first.
    #[serde(default)]
    pub subscriptions: BTreeMap<String, Vec<KeptSubscription>>,
    /// Each user's missed calls, oldest first.
    #[serde(default)]
    pub missed: BTreeMap<String, Vec<MissedCall>>,
}

/// A subscription as kept: as the browser gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptSubscription {
    /// The push service's URL.
    pub endpoint: String,
    /// The keys, base64url.
    pub keys: Keys,
}

impl<S: Clone + Eq + Hash> Hub<S> {
    /// Whether what [`Hub::kept`] gives changed since the last call.
    pub fn take_state_changed(&mut self) -> bool {
        std::mem::take(&mut self.state_changed)
    }

    /// What must outlive a restart, now.
    pub fn kept(&self) -> Kept {
        let subscriptions = self
            .subscriptions
            .iter()
            .map(|(user, theirs)| {
                let kept = theirs
                    .iter()
                    .map(|s| KeptSubscription {
                        endpoint: s.endpoint.clone(),
                        keys: s.keys.clone(),
                    })
                    .collect();
                (user.to_string(), kept)
            })
            .collect();
        let missed = self
            .missed
            .iter()
            .map(|(user, theirs)| (user.to_string(), theirs.iter().cloned().collect()))
            .collect();
        Kept {
            subscriptions,
            missed,
        }
    }

    /// Takes back what was kept before a restart; what no longer checks
    /// (a bad name, a subscription the policy now refuses, past the
    /// bounds) is left out and logged.
    pub fn restore(&mut self, kept: Kept) {
        let mut skipped = 0;
        for (user, theirs) in kept.subscriptions {
            if !valid_user_name(&user) {
                skipped += theirs.len();
                continue;
            }
            let user: std::rc::Rc<str> = user.into();
            for kept in theirs
                .into_iter()
                .rev()
                .take(MAX_SUBSCRIPTIONS_PER_USER)
                .rev()
            {
                let fits = self.subscription_count < MAX_SUBSCRIPTIONS;
                match Subscription::new(kept.endpoint, kept.keys) {
                    Ok(subscription)
                        if fits && self.push_policy.check(&subscription.target).is_ok() =>
                    {
                        self.subscription_count += 1;
                        self.subscriptions
                            .entry(user.clone())
                            .or_default()
                            .push(subscription);
                    }
                    _ => skipped += 1,
                }
            }
        }
        for (user, theirs) in kept.missed {
            if !valid_user_name(&user) {
                skipped += theirs.len();
                continue;
            }
            let keep = theirs
                .len()
                .min(MAX_MISSED_PER_USER)
                .min(MAX_MISSED - self.missed_count);
            skipped += theirs.len() - keep;
            let from = theirs.len() - keep;
            self.missed_count += keep;
            self.missed
                .entry(user.into())
                .or_default()
                .extend(theirs.into_iter().skip(from));
        }
        if skipped > 0 {
            log::warn!("state: {skipped} kept entries no longer check; left out");
        }
        log::info!(
            "state: {} push subscriptions and {} missed calls read back",
            self.subscription_count,
            self.missed_count
        );
    }
}
