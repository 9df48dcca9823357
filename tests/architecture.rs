//! The structural rules of docs/ARCHITECTURE.md ("Rules stated as absences"), held by reading
//! the `crate::` paths and external crates each top-level module of src/ uses. No servers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules (and watched external crates) its non-test code
/// names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read src") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().and_then(|x| x.to_str()) != Some("rs") {
                continue;
            }
            let rel = p
                .strip_prefix(&src)
                .expect("under src")
                .to_string_lossy()
                .to_string();
            if rel == "main.rs" || rel == "lib.rs" || rel.ends_with("fuzz_tests.rs") {
                continue;
            }
            let module = rel
                .split('/')
                .next()
                .unwrap_or_default()
                .trim_end_matches(".rs")
                .to_string();
            let text = std::fs::read_to_string(&p).expect("read file");
            // unit tests (a `#[cfg(test)] mod x {` block) may use anything
            let code = test_block_start(&text).map_or(text.as_str(), |i| &text[..i]);
            let uses = out.entry(module.clone()).or_default();
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    uses.insert(name);
                }
            }
            for ext in ["tokio", "mysql_async", "rdkafka", "redis"] {
                if code.contains(&format!("{ext}::")) {
                    uses.insert(format!("extern:{ext}"));
                }
            }
        }
    }
    out
}

/// Where the first inline `#[cfg(test)] mod name {` block starts (`mod name;` lines are not
/// blocks: that file is skipped by name).
fn test_block_start(text: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find("#[cfg(test)]") {
        let at = from + i;
        let rest = text[at + "#[cfg(test)]".len()..].trim_start();
        if let Some(m) = rest.strip_prefix("mod ") {
            let head: String = m.chars().take_while(|c| *c != '\n').collect();
            if head.trim_end().ends_with('{') {
                return Some(at);
            }
        }
        from = at + 1;
    }
    None
}

fn uses<'a>(g: &'a BTreeMap<String, BTreeSet<String>>, m: &str) -> &'a BTreeSet<String> {
    g.get(m)
        .unwrap_or_else(|| panic!("no module {m} in src/ (update this test and ARCHITECTURE.md)"))
}

#[test]
fn leaves_import_nothing_of_the_crate() {
    let g = graph();
    for leaf in ["binlog", "units", "tls", "finding", "filter"] {
        let u: Vec<_> = uses(&g, leaf)
            .iter()
            .filter(|x| !x.starts_with("extern:"))
            .collect();
        assert!(u.is_empty(), "{leaf} is a leaf but imports {u:?}");
    }
}

#[test]
fn no_import_circle() {
    let g = graph();
    for (a, outs) in &g {
        // depth-first search from a's imports back to a
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = outs.iter().collect();
        while let Some(x) = stack.pop() {
            assert!(x != a, "import circle through {a}: {g:#?}");
            if seen.insert(x.clone()) {
                if let Some(next) = g.get(x) {
                    stack.extend(next.iter());
                }
            }
        }
    }
}

#[test]
fn decode_is_sans_io() {
    let g = graph();
    for bad in [
        "extern:tokio",
        "extern:mysql_async",
        "source",
        "mysql",
        "sinks",
        "pipeline",
        "checkpoint",
        "cmd",
        "config",
    ] {
        assert!(
            !uses(&g, "decode").contains(bad),
            "decode/ must not import {bad}"
        );
    }
}

#[test]
fn sinks_never_reach_up_the_pipeline() {
    let g = graph();
    for bad in ["source", "pipeline", "checkpoint", "cmd", "config"] {
        assert!(
            !uses(&g, "sinks").contains(bad),
            "sinks/ must not import {bad}"
        );
    }
}

#[test]
fn mysql_helpers_import_no_stage() {
    let g = graph();
    for bad in ["source", "pipeline", "sinks", "checkpoint", "cmd", "config"] {
        assert!(
            !uses(&g, "mysql").contains(bad),
            "mysql/ must not import {bad}"
        );
    }
}

#[test]
fn only_cmd_wires_stages() {
    let g = graph();
    for (m, u) in &g {
        if m == "cmd" {
            continue;
        }
        assert!(
            !u.contains("cmd"),
            "{m} imports cmd/: only main.rs calls the verbs"
        );
        let stages: Vec<_> = ["source", "pipeline", "sinks", "checkpoint"]
            .into_iter()
            .filter(|s| u.contains(*s) && *s != m)
            .collect();
        // a component's config sits next to it, so the config aggregate names them all
        if m != "config" {
            assert!(
                stages.len() <= 1,
                "{m} wires stages together ({stages:?}): that is cmd/'s job"
            );
        }
    }
}

#[test]
fn only_cmd_reads_the_config_aggregate() {
    let g = graph();
    for (m, u) in &g {
        if m == "cmd" {
            continue;
        }
        assert!(
            !u.contains("config"),
            "{m} imports the config aggregate: take its own section (next to it) instead"
        );
    }
}

/// The benches' private servers listen on ports no test uses: a developer who keeps them
/// (`BINLOGD_KEEP_SERVERS=1`) can still run the suite (the workloads bench's MariaDB on 3361
/// once made `tests/tls.rs` fail, its private server's port taken).
#[test]
fn bench_servers_use_ports_no_test_uses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read_dir = |d: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root.join(d))
            .expect("read dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().and_then(|x| x.to_str()) == Some("rs"))
            .map(|p| std::fs::read_to_string(p).expect("read"))
            .collect();
        v.sort();
        v
    };
    // numbers that look like ports (4-5 digits, 1024..65535) anywhere in a text
    let numbers = |text: &str| -> BTreeSet<u32> {
        text.split(|c: char| !c.is_ascii_digit())
            .filter(|w| (4..=5).contains(&w.len()))
            .filter_map(|w| w.parse().ok())
            .filter(|n| (1024..65536).contains(n))
            .collect()
    };
    let mut bench_ports = BTreeSet::new();
    for text in read_dir("benches") {
        // the default after each `…_PORT"` variable: `env_or("BINLOGD_BENCH_MYSQL_PORT", NNNN)`,
        // `var("BINLOGD_BENCH_PORT") … .unwrap_or(NNNN)`
        for (i, _) in text.match_indices("_PORT\"") {
            let after: String = text[i..].chars().take(160).collect();
            let first = after
                .split(|c: char| !c.is_ascii_digit())
                .find(|w| (4..=5).contains(&w.len()))
                .and_then(|w| w.parse::<u32>().ok());
            bench_ports.extend(first);
        }
    }
    assert!(
        bench_ports.len() >= 3,
        "found the benches' default ports: {bench_ports:?}"
    );
    let mut test_text = read_dir("tests").join("\n");
    test_text += &read_dir("tests/common").join("\n");
    test_text += &std::fs::read_to_string(root.join("scripts/test-servers.sh")).expect("read");
    let test_numbers = numbers(&test_text);
    let shared: Vec<_> = bench_ports.intersection(&test_numbers).collect();
    assert!(
        shared.is_empty(),
        "bench default ports also used by tests: {shared:?}"
    );
}
