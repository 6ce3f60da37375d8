//! pm2's own client protocols on Corral's daemon: the real `pm2` npm
//! package (pinned in tests/pm2api) drives the daemon over `rpc.sock` and
//! listens on `pub.sock`; hostile bytes on either close only that
//! connection.

mod common;

use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// The npm fixture project with the real `pm2` and `@pm2/io` packages.
fn pm2api_dir() -> PathBuf {
    static NPM: std::sync::Once = std::sync::Once::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pm2api");
    NPM.call_once(|| {
        if !dir.join("node_modules/pm2").is_dir() {
            let st = Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir).status();
            assert!(st.is_ok_and(|s| s.success()), "npm ci in {} failed", dir.display());
        }
    });
    dir
}

/// Runs a script of the fixture project against this daemon's home.
fn node(pm2: &Pm2, script_and_args: &str) -> Run {
    let dir = pm2api_dir();
    let mut words = script_and_args.split_whitespace();
    let script = words.next().unwrap_or_default();
    let out = Command::new("node")
        .arg(dir.join(script))
        .args(words)
        .current_dir(&dir)
        .env("PM2_HOME", pm2.home())
        .env_remove("PM2_USAGE")
        .output()
        .expect("spawn node");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn daemon_pid(pm2: &Pm2) -> i32 {
    std::fs::read_to_string(pm2.home().join("pm2.pid")).unwrap().trim().parse().unwrap()
}

#[test]
fn the_pm2_library_drives_the_corral_daemon() {
    let pm2 = Pm2::new();
    pm2.run(&["ping"]).ok();
    let daemon = daemon_pid(&pm2);
    let r = node(&pm2, "api.js");
    assert!(r.code == 0 && r.stdout.contains("ALL OK"), "{}", r.all());
    // pm2.connect() found Corral's daemon: no Node God daemon was spawned.
    assert_eq!(daemon_pid(&pm2), daemon);
    assert!(pid_alive(daemon));
    assert!(!pm2.daemon_log().contains("New PM2 Daemon started") || pm2.daemon_log().contains("(corral)"));
    // And Corral's own CLI still works beside it.
    assert!(pm2.jlist().is_empty());
}

/// One axon RPC call on a raw connection; returns the decoded reply message.
fn rpc_call(s: &mut UnixStream, method: &str, id: &str) -> serde_json::Value {
    let msg = serde_json::json!({ "type": "call", "method": method, "args": [{}] });
    let f = axon::encode(&[axon::pack_value(&msg), axon::pack_str(id)]).unwrap();
    s.write_all(&f).unwrap();
    let mut dec = axon::Decoder::new(1 << 24);
    let mut buf = [0u8; 4096];
    loop {
        if let Some(frame) = dec.next_frame().unwrap() {
            assert_eq!(axon::unpack(&frame[1]).unwrap(), axon::Arg::Str(id.into()));
            return axon::unpack(&frame[0]).unwrap().as_json().cloned().unwrap();
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "daemon closed a well-behaved RPC connection");
        dec.extend(&buf[..n]);
    }
}

/// Writes `payload` and expects the daemon to close the connection (EOF,
/// not the read timeout).
fn expect_closed(sock: &Path, payload: &[u8]) {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let _ = s.write_all(payload);
    // pub.sock may stream events before it sees the garbage: read until
    // EOF, within a deadline.
    let deadline = std::time::Instant::now() + T;
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
            }
            Err(_) => return, // reset by the daemon: closed too
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}: {:?} did not close the connection",
            sock.display(),
            String::from_utf8_lossy(payload)
        );
    }
}

#[test]
fn garbage_on_rpc_and_pub_sockets_closes_only_that_connection() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "forever.js"]).ok();
    let rpc = pm2.home().join("rpc.sock");
    let bus = pm2.home().join("pub.sock");

    // A well-behaved client stays connected throughout.
    let mut good = UnixStream::connect(&rpc).unwrap();
    good.set_read_timeout(Some(T)).unwrap();
    assert_eq!(rpc_call(&mut good, "ping", "1:0")["args"][0]["msg"], "pong");

    let amp_one_arg = axon::encode(&[axon::pack_str("no id")]).unwrap();
    let bad_json = axon::encode(&[b"j:{nope".to_vec(), axon::pack_str("1:1")]).unwrap();
    for sock in [&rpc, &bus] {
        for payload in [
            &b"\xff\xff\xff\xffjunk"[..],
            b"GET / HTTP/1.1\r\n\r\n",
            b"\x11\xff\xff\xff\xff",
            b"\x10",
            &amp_one_arg,
            &bad_json,
        ] {
            if sock == &bus && payload == amp_one_arg.as_slice() {
                continue; // a well-formed frame: pm2's pub socket ignores it
            }
            expect_closed(sock, payload);
        }
    }
    // A call of the wrong shape is answered with an error, not a close.
    let mut s = UnixStream::connect(&rpc).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let reply = rpc_call(&mut s, "noSuchMethod", "2:0");
    assert_eq!(reply["error"], "method \"noSuchMethod\" does not exist");

    assert_eq!(rpc_call(&mut good, "ping", "1:2")["args"][0]["msg"], "pong");
    let list = rpc_call(&mut good, "getMonitorData", "1:3");
    assert_eq!(list["args"][0][0]["pm2_env"]["status"], "online", "{list}");
    assert_eq!(status(&pm2.jlist()[0]), "online");
}

#[test]
fn pm2_io_metrics_and_actions_are_recorded_and_triggered() {
    let mut pm2 = Pm2::new();
    pm2.cwd = pm2api_dir();
    pm2.run(&["start", "app-io.js"]).ok();
    let declared = |l: &[serde_json::Value]| {
        l.first().is_some_and(|p| {
            let env = &p["pm2_env"];
            env["axm_monitor"]["Answer"]["value"] == 42
                && env["axm_monitor"]["Hits"]["value"] == 2
                && env["axm_actions"].as_array().is_some_and(|a| {
                    a.iter().any(|x| x["action_name"] == "hello")
                        && a.iter().any(|x| x["action_name"] == "echo")
                })
                && env["axm_options"].is_object()
        })
    };
    let list = pm2.wait_for("@pm2/io declarations", T, declared);
    let pid0 = pid(&list[0]);

    let d = pm2.run(&["describe", "app-io"]);
    d.ok();
    for want in [" Actions available ", "│ hello", "│ echo", "Trigger via: pm2 trigger app-io <action_name>"]
    {
        assert!(d.stdout.contains(want), "describe lacks {want:?}:\n{}", d.stdout);
    }
    for want in [" Code metrics value ", "│ Answer │ 42 units │", "│ Hits   │ 2"] {
        assert!(d.stdout.contains(want), "describe lacks {want:?}:\n{}", d.stdout);
    }
    let pretty = pm2.run(&["prettylist"]);
    assert!(
        pretty.stdout.contains("Answer: { historic: true, unit: 'units', value: 42 }"),
        "{}",
        pretty.stdout
    );

    let r = pm2.run(&["trigger", "app-io", "hello"]);
    r.ok();
    assert!(r.stdout.contains("1 processes have received command hello"), "{}", r.all());
    assert!(r.stdout.contains("[app-io:0:default]={\"success\":true,\"greeting\":\"hi\"}"), "{}", r.all());
    let r = pm2.run(&["trigger", "0", "echo", "xyz"]);
    r.ok();
    assert!(r.stdout.contains("[app-io:0:default]={\"got\":\"xyz\"}"), "{}", r.all());
    let r = pm2.run(&["trigger", "app-io", "no-such-action"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("Not any process has received a command"), "{}", r.all());

    // pm2's own trigger, through the library (rpc.sock + pub.sock).
    let r = node(&pm2, "trigger.js app-io");
    assert!(r.code == 0 && r.stdout.contains("TRIGGER OK {\"got\":\"from-library\"}"), "{}", r.all());

    // A new run declares from scratch: nothing of the old run is shown
    // for it, and its own declarations arrive.
    pm2.run(&["restart", "app-io"]).ok();
    pm2.wait_for("the new run's declarations", T, |l| declared(l) && pid(&l[0]) != pid0);
}

#[test]
fn the_library_kills_the_daemon() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "forever.js"]).ok();
    let daemon = daemon_pid(&pm2);
    let app = pid(&pm2.jlist()[0]) as i32;
    let r = node(&pm2, "kill.js");
    // pm2:kill on the bus, and the SIGQUIT pm2's client waits for.
    assert!(r.code == 0 && r.stdout.contains("KILLED announced=true signalled=true"), "{}", r.all());
    poll("the daemon and its app gone", T, || (!pid_alive(daemon) && !pid_alive(app)).then_some(()));
    for f in ["pm2.pid", "corral.sock", "rpc.sock", "pub.sock"] {
        assert!(!pm2.home().join(f).exists(), "{f} left behind");
    }
}

#[test]
fn system_data_stdin_and_profiles_over_the_api() {
    let pm2 = Pm2::new();
    // Its own inspector port (0: any free one), not node's shared 9229.
    pm2.run(&["start", "stdin_echo.js", "--name", "echo", "--node-args=--inspect-port=0"]).ok();
    pm2.wait_for("echo online", T, |l| l.first().is_some_and(|p| status(p) == "online"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api.cpuprofile");
    let r = node(&pm2, &format!("extra.js 0 {}", file.display()));
    let line =
        r.stdout.lines().find_map(|l| l.strip_prefix("RESULT ")).unwrap_or_else(|| panic!("{}", r.all()));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    // pm2's host metrics shape, real values.
    let sys = &v["sys"]["r"];
    assert!(sys["RAM Total"]["value"].as_u64().is_some_and(|n| n > 0), "{v}");
    assert_eq!(sys["CPU Usage"]["unit"], "%", "{v}");
    assert_eq!(sys["CPU Usage"]["type"], "metric", "{v}");
    // sendLineToStdin answers {pm_id, line} and the app gets the line.
    assert_eq!(v["line"]["err"], serde_json::Value::Null, "{v}");
    assert_eq!(v["line"]["r"]["line"], "from-library\n", "{v}");
    assert_eq!(v["lineMissing"]["err"], "pm_id or line field missing", "{v}");
    let out = pm2.proc("echo").unwrap()["pm2_env"]["pm_out_log_path"].as_str().unwrap().to_string();
    poll("the app to echo the line", T, || {
        std::fs::read_to_string(&out).ok().filter(|s| s.contains("got from-library"))
    });
    // Without an app: pm2's {error} answer; with one: {file}.
    assert!(v["cpuNoApp"]["r"]["error"].as_str().is_some_and(|e| e.contains("not a Node.js process")), "{v}");
    assert_eq!(v["cpu"]["r"]["file"], file.display().to_string(), "{v}");
    let cpu: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    for k in ["nodes", "startTime", "endTime", "samples", "timeDeltas"] {
        assert!(cpu.get(k).is_some(), "cpuprofile lacks {k}");
    }
    let mem: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("api.cpuprofile.mem")).unwrap()).unwrap();
    assert!(mem.get("head").is_some() && mem.get("samples").is_some(), "heapprofile: {mem}");
}
