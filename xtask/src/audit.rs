//! `audit [--lock FILE] [--db DIR]`: checks every crates.io package that `Cargo.lock` pins
//! against the RustSec advisory database, offline, from the snapshot the project carries in
//! `third_party/rustsec-advisory-db` (see its `SNAPSHOT.md`).
//!
//! A package version is affected by an advisory when it matches none of the advisory's
//! `patched` and none of its `unaffected` requirements (what `cargo audit` does). Withdrawn
//! advisories are skipped. Vulnerabilities fail the audit; informational advisories
//! (unmaintained, unsound, notice) are listed as warnings, for a person to weigh.
//!
//! Only the advisories' TOML front matter is read, with a small parser for the few keys
//! it needs; a file it cannot read fails the audit (an advisory is never skipped unread).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use semver::{Version, VersionReq};

/// Where the snapshot lives, from the workspace's root.
pub const DEFAULT_DB: &str = "third_party/rustsec-advisory-db";

/// One advisory, as far as the audit needs it.
#[derive(Debug, Clone)]
pub struct Advisory {
    pub id: String,
    pub package: String,
    /// The first heading of the advisory's text.
    pub title: String,
    /// `unmaintained`, `unsound` or `notice`; `None` for a vulnerability.
    pub informational: Option<String>,
    pub withdrawn: bool,
    pub patched: Vec<VersionReq>,
    pub unaffected: Vec<VersionReq>,
}

impl Advisory {
    /// Whether `version` of the package is affected.
    pub fn affects(&self, version: &Version) -> bool {
        !self.withdrawn
            && !self.patched.iter().any(|req| req.matches(version))
            && !self.unaffected.iter().any(|req| req.matches(version))
    }
}

/// A package pinned by `Cargo.lock` from a registry (workspace and path packages have no
/// advisories).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locked {
    pub name: String,
    pub version: Version,
}

/// An advisory that affects a pinned package.
#[derive(Debug, Clone)]
pub struct Finding {
    pub advisory: Advisory,
    pub package: Locked,
}

#[derive(Debug, Default)]
pub struct Report {
    pub packages: usize,
    pub advisories: usize,
    pub vulnerabilities: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

pub fn run(arguments: &[String]) -> anyhow::Result<()> {
    let mut lock = PathBuf::from("Cargo.lock");
    let mut db = PathBuf::from(DEFAULT_DB);
    let mut rest = arguments.iter();
    while let Some(argument) = rest.next() {
        let mut value = || rest.next().with_context(|| format!("{argument} needs a value"));
        match argument.as_str() {
            "--lock" => lock = PathBuf::from(value()?),
            "--db" => db = PathBuf::from(value()?),
            other => bail!("unknown argument {other}; usage: cargo run -p xtask -- audit [--lock FILE] [--db DIR]"),
        }
    }
    let report = audit_files(&lock, &db)?;
    print!("{}", describe(&report, &db));
    if !report.vulnerabilities.is_empty() {
        bail!("{} vulnerable package version(s) in {}", report.vulnerabilities.len(), lock.display());
    }
    Ok(())
}

/// Audits the lock file at `lock` against the advisory database at `db`.
pub fn audit_files(lock: &Path, db: &Path) -> anyhow::Result<Report> {
    let text = std::fs::read_to_string(lock).with_context(|| format!("cannot read {}", lock.display()))?;
    let locked = parse_lock(&text).with_context(|| format!("{} is not a Cargo.lock cargo wrote", lock.display()))?;
    let advisories = read_db(db)?;
    Ok(audit(&locked, &advisories))
}

pub fn audit(locked: &[Locked], advisories: &[Advisory]) -> Report {
    let mut report = Report { packages: locked.len(), advisories: advisories.len(), ..Report::default() };
    for package in locked {
        for advisory in advisories.iter().filter(|a| a.package == package.name && a.affects(&package.version)) {
            let finding = Finding { advisory: advisory.clone(), package: package.clone() };
            match advisory.informational {
                None => report.vulnerabilities.push(finding),
                Some(_) => report.warnings.push(finding),
            }
        }
    }
    report
}

fn describe(report: &Report, db: &Path) -> String {
    let snapshot = std::fs::read_to_string(db.join("SNAPSHOT.md")).unwrap_or_default();
    // "… at commit <hash> of <date>. …"
    let at = snapshot
        .split_once("at commit ")
        .and_then(|(_, rest)| rest.split_once('.'))
        .map_or("unrecorded".to_string(), |(commit, _)| commit.split_whitespace().collect::<Vec<_>>().join(" "));
    let mut out = format!(
        "dependency audit: {} registry packages of Cargo.lock against {} RustSec advisories (snapshot: commit {at})\n",
        report.packages, report.advisories,
    );
    let line = |finding: &Finding| {
        let advisory = &finding.advisory;
        let patched: Vec<String> = advisory.patched.iter().map(ToString::to_string).collect();
        format!(
            "  {} {} {}: {} (patched: {})\n",
            advisory.id,
            finding.package.name,
            finding.package.version,
            advisory.title,
            if patched.is_empty() { "none".to_string() } else { patched.join(", ") }
        )
    };
    if report.vulnerabilities.is_empty() {
        out.push_str("no vulnerability\n");
    } else {
        out.push_str(&format!("VULNERABLE ({}):\n", report.vulnerabilities.len()));
        report.vulnerabilities.iter().for_each(|finding| out.push_str(&line(finding)));
    }
    for kind in ["unsound", "unmaintained", "notice"] {
        let of_kind: Vec<&Finding> =
            report.warnings.iter().filter(|f| f.advisory.informational.as_deref() == Some(kind)).collect();
        if !of_kind.is_empty() {
            out.push_str(&format!("warning, {kind} ({}):\n", of_kind.len()));
            of_kind.into_iter().for_each(|finding| out.push_str(&line(finding)));
        }
    }
    out
}

/// Reads every advisory under `db/crates/<package>/`.
pub fn read_db(db: &Path) -> anyhow::Result<Vec<Advisory>> {
    let crates = db.join("crates");
    let mut paths = Vec::new();
    for package in std::fs::read_dir(&crates).with_context(|| format!("cannot read {}", crates.display()))? {
        let package = package?.path();
        if package.is_dir() {
            for file in std::fs::read_dir(&package)? {
                let file = file?.path();
                if file.extension().is_some_and(|e| e == "md") {
                    paths.push(file);
                }
            }
        }
    }
    paths.sort();
    if paths.is_empty() {
        bail!("no advisory under {}", crates.display());
    }
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)?;
            parse_advisory(&text).with_context(|| format!("cannot read the advisory {}", path.display()))
        })
        .collect()
}

/// Reads an advisory's front matter (a TOML block at the top of its Markdown) and title.
pub fn parse_advisory(text: &str) -> anyhow::Result<Advisory> {
    let body = text.trim_start().strip_prefix("```toml").context("no TOML front matter")?;
    let end = body.find("\n```").context("the TOML front matter does not end")?;
    let (front, after) = (&body[..end], &body[end + 4..]);
    let title = after
        .lines()
        .find_map(|line| line.strip_prefix("# "))
        .map(|title| title.trim().to_string())
        .unwrap_or_default();
    let mut advisory = Advisory {
        id: String::new(),
        package: String::new(),
        title,
        informational: None,
        withdrawn: false,
        patched: Vec::new(),
        unaffected: Vec::new(),
    };
    let mut table = String::new();
    let mut lines = front.lines();
    while let Some(line) = lines.next() {
        let line = strip_comment(line);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = name.trim().to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { bail!("a line that is not `key = value`: {line}") };
        let (key, mut value) = (key.trim().trim_matches('"'), value.trim().to_string());
        // An array may go on over the next lines, until its bracket closes.
        if value.starts_with('[') {
            while !array_closed(&value) {
                let next = lines.next().context("an array that does not close")?;
                value.push(' ');
                value.push_str(strip_comment(next).trim());
            }
        }
        match (table.as_str(), key) {
            ("advisory", "id") => advisory.id = string(&value)?,
            ("advisory", "package") => advisory.package = string(&value)?,
            ("advisory", "informational") => advisory.informational = Some(string(&value)?),
            ("advisory", "withdrawn") => advisory.withdrawn = true,
            ("versions", "patched") => advisory.patched = requirements(&value)?,
            ("versions", "unaffected") => advisory.unaffected = requirements(&value)?,
            _ => {}
        }
    }
    if advisory.id.is_empty() || advisory.package.is_empty() {
        bail!("no advisory id or package");
    }
    Ok(advisory)
}

/// The line up to a `#` that is not inside a string.
fn strip_comment(line: &str) -> &str {
    let mut in_string = false;
    for (at, c) in line.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '#' if !in_string => return &line[..at],
            _ => {}
        }
    }
    line
}

fn array_closed(value: &str) -> bool {
    let mut in_string = false;
    let mut depth = 0i32;
    for c in value.chars() {
        match c {
            '"' => in_string = !in_string,
            '[' if !in_string => depth += 1,
            ']' if !in_string => depth -= 1,
            _ => {}
        }
    }
    depth == 0
}

/// The strings of `"…"`.
fn strings(value: &str) -> Vec<&str> {
    value.split('"').skip(1).step_by(2).collect()
}

fn string(value: &str) -> anyhow::Result<String> {
    match strings(value).as_slice() {
        [one] => Ok((*one).to_string()),
        _ => bail!("not a string: {value}"),
    }
}

fn requirements(value: &str) -> anyhow::Result<Vec<VersionReq>> {
    if !value.starts_with('[') {
        bail!("not an array: {value}");
    }
    strings(value)
        .into_iter()
        .map(|req| VersionReq::parse(req).with_context(|| format!("not a version requirement: {req}")))
        .collect()
}

/// The registry packages of a `Cargo.lock` (format version 3 or 4).
pub fn parse_lock(text: &str) -> anyhow::Result<Vec<Locked>> {
    let mut packages = Vec::new();
    for block in text.split("[[package]]").skip(1) {
        let field = |name: &str| {
            block.lines().find_map(|line| {
                let (key, value) = line.split_once('=')?;
                (key.trim() == name).then(|| value.trim().trim_matches('"').to_string())
            })
        };
        let name = field("name").context("a package without a name")?;
        let version = field("version").with_context(|| format!("{name} without a version"))?;
        let registry = field("source").is_some_and(|source| source.starts_with("registry+"));
        if registry {
            let version = Version::parse(&version).with_context(|| format!("{name}: not a version: {version}"))?;
            packages.push(Locked { name, version });
        }
    }
    if packages.is_empty() {
        bail!("no registry package");
    }
    Ok(packages)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADVISORY: &str = r#"```toml
[advisory]
id = "RUSTSEC-2099-0001"
package = "sample"
date = "2099-01-01"
categories = ["memory-corruption"] # a comment

[affected.functions]
"sample::f" = ["< 1.2.0"]

[versions]
patched = [
    ">= 1.2.0, < 2.0.0", # the 1.x fix
    ">= 2.0.1",
]
unaffected = ["< 0.5"]
```

# Out-of-bounds write in `sample::f`

Text.
"#;

    fn version(text: &str) -> Version {
        Version::parse(text).expect("a version")
    }

    #[test]
    fn an_advisory_is_read_with_its_multi_line_arrays_and_comments() {
        let advisory = parse_advisory(ADVISORY).expect("parses");
        assert_eq!(advisory.id, "RUSTSEC-2099-0001");
        assert_eq!(advisory.package, "sample");
        assert_eq!(advisory.title, "Out-of-bounds write in `sample::f`");
        assert_eq!(advisory.informational, None);
        assert_eq!(advisory.patched.len(), 2);
        assert_eq!(advisory.unaffected.len(), 1);
        for (v, affected) in
            [("0.4.9", false), ("0.5.0", true), ("1.1.9", true), ("1.2.0", false), ("2.0.0", true), ("2.0.1", false)]
        {
            assert_eq!(advisory.affects(&version(v)), affected, "{v}");
        }
        let withdrawn = ADVISORY.replace("date = ", "withdrawn = \"2099-02-01\"\ndate = ");
        assert!(!parse_advisory(&withdrawn).expect("parses").affects(&version("1.0.0")));
        let informational = ADVISORY.replace("date = ", "informational = \"unsound\"\ndate = ");
        assert_eq!(parse_advisory(&informational).expect("parses").informational.as_deref(), Some("unsound"));
    }

    #[test]
    fn what_cannot_be_read_is_refused_not_skipped() {
        assert!(parse_advisory("# no front matter").is_err());
        assert!(parse_advisory(&ADVISORY.replace("\n```\n", "\n")).is_err());
        assert!(parse_advisory(&ADVISORY.replace(">= 2.0.1", "not a requirement")).is_err());
        assert!(parse_advisory(&ADVISORY.replace("    \">= 2.0.1\",\n]", "    \">= 2.0.1\",\n")).is_err());
        assert!(parse_advisory(&ADVISORY.replace("package = \"sample\"", "")).is_err());
    }

    #[test]
    fn only_registry_packages_of_the_lock_are_audited() {
        let lock = r#"version = 4

[[package]]
name = "medvault-store"
version = "0.1.0"
dependencies = ["sample"]

[[package]]
name = "sample"
version = "1.1.0"
source = "registry+https://example.invalid/index"
checksum = "00"
"#;
        let locked = parse_lock(lock).expect("parses");
        assert_eq!(locked, vec![Locked { name: "sample".into(), version: version("1.1.0") }]);
        let advisory = parse_advisory(ADVISORY).expect("parses");
        let report = audit(&locked, std::slice::from_ref(&advisory));
        assert_eq!(report.vulnerabilities.len(), 1);
        let fixed = vec![Locked { name: "sample".into(), version: version("1.2.3") }];
        assert!(audit(&fixed, &[advisory]).vulnerabilities.is_empty());
    }

    fn workspace_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
    }

    /// The gate: every advisory of the carried snapshot reads, and a known vulnerable
    /// version is found in it.
    #[test]
    fn the_snapshot_reads_whole_and_finds_a_known_vulnerable_version() {
        let advisories = read_db(&workspace_root().join(DEFAULT_DB)).expect("every advisory reads");
        assert!(advisories.len() > 1000, "{} advisories", advisories.len());
        // `time` 0.1.x: RUSTSEC-2020-0071 (a segfault setting the environment concurrently).
        let old_time = vec![Locked { name: "time".into(), version: version("0.1.44") }];
        let report = audit(&old_time, &advisories);
        assert!(report.vulnerabilities.iter().any(|f| f.advisory.id == "RUSTSEC-2020-0071"), "{report:?}");
    }

    /// The workspace's own lock file has no known vulnerability (what CI runs as
    /// `cargo run -p xtask -- audit`, here so that the test command fails too).
    #[test]
    fn the_workspace_lock_has_no_known_vulnerability() {
        let root = workspace_root();
        let report = audit_files(&root.join("Cargo.lock"), &root.join(DEFAULT_DB)).expect("audits");
        assert!(report.packages > 100);
        assert!(report.vulnerabilities.is_empty(), "{}", describe(&report, &root.join(DEFAULT_DB)));
    }
}
