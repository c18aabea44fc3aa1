//! Embeds the intercom page's script and style without their comments,
//! blank lines and indentation: those are for readers of `src/app/web`,
//! and cost the binary about 16 KB (the Pi build's size budget is in
//! `tests/arm`). Nothing else changes: every line of code stays a line,
//! so a browser's error still names the statement.

use std::path::Path;

fn main() {
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    for name in ["app.js", "app.css"] {
        let source = Path::new("src/app/web").join(name);
        println!("cargo:rerun-if-changed={}", source.display());
        let text = std::fs::read_to_string(&source).expect("the page's files are in src/app/web");
        let js = name.ends_with(".js");
        std::fs::write(Path::new(&out).join(name), lean(&text, js)).expect("OUT_DIR is writable");
    }
}

/// `text` without whole-line comments (`/* … */` opening a line, and `//`
/// lines in a script), blank lines and indentation. A line of a template
/// literal that spans lines would lose its indentation, so there must be
/// none: an odd number of backticks on a line stops the build.
fn lean(text: &str, js: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_comment = false;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if js && line.matches('`').count() % 2 == 1 {
            panic!("line {}: a template literal spans lines", number + 1);
        }
        if in_comment {
            in_comment = !line.contains("*/");
            continue;
        }
        if line.starts_with("/*") {
            in_comment = !line.contains("*/");
            if in_comment || line.ends_with("*/") {
                continue;
            }
        }
        if line.is_empty() || (js && line.starts_with("//")) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
