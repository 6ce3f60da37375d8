//! Built-in log rotation end to end: a real node app writing numbered lines
//! as fast as it can across many rotations; every line must be found exactly
//! once, whole, in the rotated and current files.

mod common;
use common::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// Every file of the log `out` (current and rotated, `.gz` unpacked).
fn log_files(out: &Path) -> Vec<PathBuf> {
    let dir = out.parent().expect("log dir");
    let stem = out.file_name().unwrap().to_string_lossy().trim_end_matches(".log").to_string();
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("logs dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n == format!("{stem}.log") || n.starts_with(&format!("{stem}__"))
        })
        .collect();
    v.sort();
    v
}

/// While files still move (rotation, compression, retain), a file may go
/// between listing and reading: read what is there, ignore what is not.
fn has_done(files: &[PathBuf]) -> bool {
    files.iter().any(|f| {
        let raw = std::fs::read(f).unwrap_or_default();
        let text = if f.extension().is_some_and(|e| e == "gz") {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&raw[..]), &mut s);
            s
        } else {
            String::from_utf8_lossy(&raw).into_owned()
        };
        text.lines().any(|l| l == "DONE")
    })
}

fn read_any(p: &Path) -> String {
    let raw = std::fs::read(p).unwrap_or_default();
    if p.extension().is_some_and(|e| e == "gz") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&raw[..]), &mut s)
            .unwrap_or_else(|e| panic!("{} is no valid gzip: {e}", p.display()));
        s
    } else {
        String::from_utf8_lossy(&raw).into_owned()
    }
}

/// seq -> how many times seen; panics on a line that is not whole.
fn count_lines(files: &[PathBuf], pad: usize) -> (HashMap<u64, u32>, bool) {
    let mut seen = HashMap::new();
    let mut done = false;
    let padding = "x".repeat(pad);
    for f in files {
        let text = read_any(f);
        assert!(text.is_empty() || text.ends_with('\n'), "{} ends inside a line", f.display());
        for line in text.lines() {
            if line == "DONE" {
                done = true;
                continue;
            }
            let mut parts = line.split(' ');
            let (a, b, c) = (parts.next(), parts.next(), parts.next());
            let n = a.and_then(|a| a.strip_prefix("seq=")).and_then(|n| n.parse::<u64>().ok());
            let m = c.and_then(|c| c.strip_prefix("end=")).and_then(|n| n.parse::<u64>().ok());
            assert!(
                n.is_some() && n == m && b == Some(padding.as_str()) && parts.next().is_none(),
                "torn or foreign line in {}: {line:?}",
                f.display()
            );
            *seen.entry(n.unwrap_or(0)).or_insert(0) += 1;
        }
    }
    (seen, done)
}

/// `poll`, printing what was last seen when the deadline passes.
fn poll_or<T>(
    what: &str,
    timeout: Duration,
    last: &std::cell::RefCell<String>,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; last seen:\n{}",
            last.borrow()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn out_path(pm2: &Pm2, name: &str) -> PathBuf {
    let p = pm2.proc(name).expect("app listed");
    PathBuf::from(p["pm2_env"]["pm_out_log_path"].as_str().expect("out path"))
}

#[test]
fn rotation_under_load_loses_and_duplicates_nothing() {
    const COUNT: u64 = 200_000;
    let pm2 = Pm2::new();
    let eco = pm2.home().join("eco.config.js");
    std::fs::write(
        &eco,
        format!(
            "module.exports = {{ apps: [{{ name: 'seq', script: '{}', autorestart: false,
               log_max_size: '256K', log_retain: 'all',
               env: {{ SEQ_COUNT: '{COUNT}', SEQ_PAD: '40' }} }}] }};",
            fixtures().join("seqlog.js").display()
        ),
    )
    .unwrap();
    let r = pm2.run(&["start", eco.to_str().unwrap()]);
    r.ok();
    assert!(!r.all().contains("unknown option"), "{}", r.all());
    let out = out_path(&pm2, "seq");
    // Polled loosely (files move while we read); checked strictly once the
    // app has written its last line.
    let files = poll("all lines written", T, || {
        let files = log_files(&out);
        has_done(&files).then_some(files)
    });
    let (seen, done) = count_lines(&files, 40);
    assert!(done);
    assert!(files.len() > 20, "expected many rotations, got {} files", files.len());
    assert_eq!(seen.len() as u64, COUNT, "lines lost");
    let dup: Vec<_> = seen.iter().filter(|(_, c)| **c != 1).take(5).collect();
    assert!(dup.is_empty(), "lines written more than once: {dup:?}");
    assert!((0..COUNT).all(|i| seen.contains_key(&i)));
    // The app never stalled or restarted because of rotation.
    assert_eq!(restarts(&pm2.proc("seq").unwrap()), 0);
}

#[test]
fn pm2_logrotate_settings_retain_and_compress() {
    const COUNT: u64 = 5_000;
    let pm2 = Pm2::new();
    // Set the way pm2-logrotate users do (this also starts the daemon).
    pm2.run(&["set", "pm2-logrotate:max_size", "10K"]).ok();
    pm2.run(&["set", "pm2-logrotate:retain", "3"]).ok();
    pm2.run(&["set", "pm2-logrotate:compress", "true"]).ok();
    let mut cmd = pm2.cmd(&["start", "seqlog.js", "--name", "gz", "--no-autorestart"]);
    cmd.env("SEQ_COUNT", COUNT.to_string()).env("SEQ_PAD", "40");
    assert!(cmd.output().expect("pm2 start").status.success());
    let out = out_path(&pm2, "gz");
    // Rotation, compression and retain settle: DONE is written,
    // exactly three rotated files are left and each is compressed.
    let last = std::cell::RefCell::new(String::new());
    let files = poll_or("three compressed rotated files", T, &last, || {
        let files = log_files(&out);
        *last.borrow_mut() = format!("{files:?}\n{}", pm2.daemon_log());
        let rotated: Vec<_> = files.iter().filter(|p| **p != out).cloned().collect();
        // DONE may have ended in a rotated file (its write can be the one
        // that reached max_size).
        let current_done = has_done(&files);
        let all_gz = rotated.iter().all(|p| p.extension().is_some_and(|e| e == "gz"));
        (current_done && rotated.len() == 3 && all_gz).then_some(files)
    });
    // What is kept is the newest lines: a gapless run ending at the last
    // line, each once.
    let (seen, done) = count_lines(&files, 40);
    assert!(done);
    let min = *seen.keys().min().expect("some lines kept");
    assert!(min > 0, "retain deleted nothing");
    for i in min..COUNT {
        assert_eq!(seen.get(&i), Some(&1), "line {i} missing or doubled in the retained files");
    }
    assert_eq!(seen.len() as u64, COUNT - min);
}

#[test]
fn a_full_disk_does_not_stop_the_app() {
    let pm2 = Pm2::new();
    // /dev/full fails every write with ENOSPC, like a full disk.
    pm2.run(&["start", "forever.js", "--name", "full", "--output", "/dev/full"]).ok();
    poll("the failure reported in pm2.log", T, || {
        pm2.daemon_log().contains("log file /dev/full: write failed").then_some(())
    });
    // The app keeps running and printing: its lines still reach `pm2 logs`.
    let mut child = pm2
        .cmd(&["logs", "full", "--raw", "--lines", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("pm2 logs");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = std::time::Instant::now() + T;
    let got = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.starts_with("tick ") => break l,
            Ok(_) => {}
            Err(_) => panic!("no line of the app streamed within {T:?}"),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(got.starts_with("tick "));
    let p = pm2.proc("full").expect("listed");
    assert_eq!(status(&p), "online");
    assert_eq!(restarts(&p), 0);
    // One report per failure episode, not one per line.
    assert_eq!(pm2.daemon_log().matches("log file /dev/full: write failed").count(), 1);
}
