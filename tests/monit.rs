//! `pm2 monit` driven as a person would: in a real terminal (tmux), reading
//! the screen (capture-pane) and typing keys (send-keys).

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// A tmux server of our own (unique socket), killed on drop.
struct Tmux {
    sock: String,
}

impl Tmux {
    fn new() -> Tmux {
        let sock = format!("corral-monit-{}-{}", std::process::id(), free_port());
        Tmux { sock }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.sock, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux must be installed (scripts/test-all installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "monit"])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "monit"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn pane(&self, format: &str) -> String {
        self.run(&["display-message", "-p", "-t", "monit", format]).trim().to_string()
    }

    fn wait_screen(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let last = std::cell::RefCell::new(String::new());
        let deadline = std::time::Instant::now() + T;
        loop {
            let s = self.screen();
            if f(&s) {
                return s;
            }
            *last.borrow_mut() = s;
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{}",
                last.borrow()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

/// The npm fixture project with the real `@pm2/io` (installed by
/// scripts/test-all; installed here when missing).
fn pm2io_app() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pm2api");
    if !dir.join("node_modules/@pm2/io").is_dir() {
        let st = Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir).status();
        assert!(st.is_ok_and(|s| s.success()), "npm ci in {} failed", dir.display());
    }
    dir.join("app-io.js")
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[test]
fn monit_in_a_terminal() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "forever.js", "--name", "alpha"]).ok();
    pm2.run(&["start", "forever.js", "--name", "bravo"]).ok();
    // An app reporting custom metrics through the real @pm2/io.
    pm2.run(&["start", pm2io_app().to_str().expect("utf-8 path"), "--name", "metrics"]).ok();
    pm2.wait_for("three online", T, |l| l.len() == 3 && l.iter().all(|p| status(p) == "online"));

    let tmux = Tmux::new();
    // After monit exits, the shell reports its exit code and the terminal
    // modes, and stays so the pane can be read.
    let mut env = format!("PM2_HOME={} ", shell_quote(&pm2.home().to_string_lossy()));
    for (k, v) in &pm2.envs {
        env.push_str(&format!("{k}={} ", shell_quote(v)));
    }
    let script = format!(
        "{env} {} monit; code=$?; modes=$(stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo | tr '\\n' ' '); echo \"monit-exit=$code modes: $modes:end\"; exec sleep 600",
        shell_quote(BIN)
    );
    tmux.run(&["new-session", "-d", "-s", "monit", "-x", "160", "-y", "45", "sh", "-c", &script]);

    // Both apps are listed, the first is selected and its live log shows.
    tmux.wait_screen("the app names and a log line", |s| {
        s.contains("alpha") && s.contains("bravo") && s.contains("Logs: alpha [0]") && s.contains("tick ")
    });
    assert_eq!(tmux.pane("#{alternate_on}"), "1", "monit draws on the alternate screen");

    // Down selects bravo; its metadata and log follow.
    tmux.keys(&["Down"]);
    tmux.wait_screen("bravo selected", |s| {
        s.contains("Logs: bravo [1]") && s.contains("name              bravo")
    });

    // r restarts the selected process.
    tmux.keys(&["r"]);
    pm2.wait_for("bravo restarted", T, |l| {
        l.iter().any(|p| p["name"] == "bravo" && restarts(p) >= 1 && status(p) == "online")
    });
    assert_eq!(restarts(&pm2.proc("alpha").unwrap()), 0, "only the selected process restarts");
    // The restarted process's new output reaches the log pane.
    tmux.wait_screen("bravo's new start in the log", |s| s.matches("forever started").count() >= 2);

    // `/` searches the log.
    tmux.keys(&["/"]);
    tmux.wait_screen("the search prompt", |s| s.contains("search: "));
    tmux.keys(&["-l", "forever started"]);
    tmux.keys(&["Enter"]);
    tmux.wait_screen("search results", |s| {
        s.contains("search \"forever started\": ") && s.contains("matches")
    });

    // Resizing redraws to the new size.
    tmux.run(&["resize-window", "-t", "monit", "-x", "120", "-y", "35"]);
    tmux.wait_screen("a redraw at 120 columns", |s| {
        s.lines().any(|l| l.chars().count() == 120 && l.ends_with('┐')) && s.contains("bravo")
    });

    // The @pm2/io app's custom metrics show in the metrics panel.
    // (One key per write: ESC followed at once by an arrow's ESC [ B reads
    // as one Alt sequence, in any terminal.)
    tmux.keys(&["Escape"]);
    tmux.wait_screen("the search cleared", |s| !s.contains("search \""));
    tmux.keys(&["Down"]);
    tmux.wait_screen("custom metrics of the @pm2/io app", |s| {
        s.contains("Logs: metrics [2]") && s.contains("Answer") && s.contains("42 units")
    });

    // Esc clears the search, q quits: monit exits 0 and the terminal is
    // back in its normal modes.
    tmux.keys(&["q"]);
    let s = tmux.wait_screen("monit's exit", |s| s.contains(":end"));
    assert!(s.contains("monit-exit=0"), "{s}");
    assert!(s.contains("icanon") && !s.contains("-icanon"), "canonical mode restored:\n{s}");
    assert!(s.contains("echo") && !s.contains("-echo"), "echo restored:\n{s}");
    assert_eq!(tmux.pane("#{alternate_on}"), "0", "alternate screen left");
    assert_eq!(tmux.pane("#{cursor_flag}"), "1", "cursor shown again");
}
