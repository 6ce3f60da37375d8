//! `pm2 deploy` with pm2-deploy's script (pinned in tests/deploy) against a
//! local bare git repository as the "remote". With `host: 'localhost'`
//! pm2-deploy runs every step with a local shell instead of ssh, so setup,
//! update, revert, curr/prev, list, exec and the hooks run for real without
//! a network or an sshd; only the ssh transport itself is not exercised.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The fixture project holding pm2-deploy (npm ci once).
fn deploy_fixture() -> PathBuf {
    static NPM: std::sync::Once = std::sync::Once::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/deploy");
    NPM.call_once(|| {
        if !dir.join("node_modules/pm2-deploy/deploy").is_file() {
            let st = Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir).status();
            assert!(st.is_ok_and(|s| s.success()), "npm ci in {} failed", dir.display());
        }
    });
    dir
}

const APP: &str =
    "console.log('version ' + require('fs').readFileSync(__dirname + '/VERSION', 'utf8').trim());\n\
                   setInterval(() => {}, 1000);\n";

#[test]
fn deploy_setup_update_revert_exec_against_a_local_repository() {
    let fixture = deploy_fixture();
    let mut pm2 = Pm2::new();
    std::os::unix::fs::symlink(&fixture, pm2.home().join("deploy")).unwrap();
    let root = tempfile::tempdir().unwrap();
    let remote = root.path().join("remote.git");
    let work = root.path().join("work");
    let target = root.path().join("srv");
    std::fs::create_dir_all(&work).unwrap();
    git(root.path(), &["init", "-q", "--bare", "-b", "main", remote.to_str().unwrap()]);
    git(&work, &["init", "-q", "-b", "main"]);
    let eco = format!(
        "module.exports = {{\n  apps: [{{ name: 'deployed', script: 'app.js' }}],\n  deploy: {{\n    production: {{\n\
         host: 'localhost',\n      ref: 'origin/main',\n      repo: '{}',\n      path: '{}',\n\
         'post-setup': 'echo setup-hook > ../post-setup.txt',\n\
         'post-deploy': 'pm2 startOrRestart ecosystem.config.js --env production',\n\
         env: {{ deploy_flag: 'on' }},\n    }},\n  }},\n}};\n",
        remote.display(),
        target.display()
    );
    std::fs::write(work.join("ecosystem.config.js"), eco).unwrap();
    std::fs::write(work.join("app.js"), APP).unwrap();
    std::fs::write(work.join("VERSION"), "1\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-qm", "v1"]);
    git(&work, &["remote", "add", "origin", remote.to_str().unwrap()]);
    git(&work, &["push", "-q", "-u", "origin", "main"]);
    let first = git(&work, &["rev-parse", "HEAD"]);

    pm2.cwd = work.clone();
    // The hooks run `pm2`: this binary, with this test's PM2_HOME.
    let bin_dir = Path::new(BIN).parent().unwrap().display().to_string();
    let path = format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default());
    pm2.envs.push(("PATH".into(), path));

    let r = pm2.run(&["deploy", "production", "setup"]);
    r.ok();
    assert!(r.stdout.contains("--> Deploying to production environment"), "{}", r.all());
    assert!(target.join("current/app.js").is_file(), "{}", r.all());
    assert_eq!(std::fs::read_to_string(target.join("post-setup.txt")).unwrap().trim(), "setup-hook");

    let r = pm2.run(&["deploy", "ecosystem.config.js", "production", "update"]);
    r.ok();
    assert!(r.all().contains("Success"), "{}", r.all());
    // post-deploy started the deployed app from the deployed tree, with the
    // deploy env exported.
    let list = pm2.wait_for("deployed online", T, |l| {
        l.iter().any(|p| p["name"] == "deployed" && status(p) == "online")
    });
    let env = &list[0]["pm2_env"];
    assert!(env["pm_exec_path"].as_str().unwrap().starts_with(target.to_str().unwrap()), "{env}");

    // A second release, then a revert to the first.
    std::fs::write(work.join("VERSION"), "2\n").unwrap();
    git(&work, &["commit", "-qam", "v2"]);
    git(&work, &["push", "-q"]);
    let second = git(&work, &["rev-parse", "HEAD"]);
    pm2.run(&["deploy", "production", "update"]).ok();
    assert_eq!(std::fs::read_to_string(target.join("current/VERSION")).unwrap().trim(), "2");
    let r = pm2.run(&["deploy", "production", "curr"]);
    r.ok();
    assert!(r.stdout.contains(&second[..7]), "{}", r.all());
    let r = pm2.run(&["deploy", "production", "list"]);
    r.ok();
    assert!(r.stdout.contains(&first) && r.stdout.contains(&second), "{}", r.all());
    pm2.run(&["deploy", "production", "revert", "1"]).ok();
    assert_eq!(std::fs::read_to_string(target.join("current/VERSION")).unwrap().trim(), "1");
    let r = pm2.run(&["deploy", "production", "exec", "cat VERSION"]);
    r.ok();
    assert!(r.stdout.lines().any(|l| l.trim() == "1"), "{}", r.all());

    // Errors: unknown environment, no ecosystem file.
    let r = pm2.run(&["deploy", "staging", "setup"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("staging environment is not defined in ecosystem.config.js file"),
        "{}",
        r.all()
    );
    pm2.cwd = root.path().to_path_buf();
    let r = pm2.run(&["deploy", "production"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("Not any default deployment file exists"), "{}", r.all());
    // The deployed app must not outlive the test: every process the hooks
    // started, by pid, whichever daemon they ended up with.
    let pids: Vec<u64> = pm2.jlist().iter().map(pid).collect();
    pm2.run(&["delete", "all"]);
    for p in pids.into_iter().filter(|p| *p > 1) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(p as i32, libc::SIGKILL) };
    }
}
