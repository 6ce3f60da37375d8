//! What differs per JavaScript runtime when the daemon spawns a worker: the
//! serialization of its IPC channel and the arguments its interpreter
//! needs. Pure; the supervisor asks, the cluster primary never needs to
//! know (a Bun worker is a JSON-mode worker, nothing more).

use corral_proto::{AppSpec, ExecMode, Runtime};
use node_ipc::{Limits, Mode};

/// The permissions a Deno app gets when its `interpreter_args` grant none:
/// a server needs the network, its configuration comes from the
/// environment (PORT, NODE_APP_INSTANCE, pm2's keys) and it reads its own
/// files and `node_modules`. `--allow-sys` lets `os.cpus()`/`os.hostname()`
/// (used by Socket.IO's engine and many loggers) work.
pub const DENO_DEFAULT_PERMISSIONS: &[&str] = &["--allow-net", "--allow-env", "--allow-read", "--allow-sys"];

/// The serialization of the channel the child gets, or `None` for no
/// channel.
///
/// - Node cluster workers: V8 "advanced" (so Buffers in Socket.IO adapter
///   messages survive), fork apps JSON (pm2's `process.send`).
/// - Bun: JSON always. Bun implements `serialization: 'advanced'` with
///   JavaScriptCore's format, which a V8 peer cannot read; its JSON channel
///   is Node's line-delimited JSON.
/// - Deno: like Node (Deno's `node:child_process` and `node:cluster` use V8's
///   serializer for "advanced").
/// - Anything else gets no channel.
pub fn ipc_mode(app: &AppSpec) -> Option<Mode> {
    let cluster = app.exec_mode == ExecMode::Cluster;
    match app.runtime() {
        Runtime::Node | Runtime::Deno if cluster => Some(Mode::Advanced),
        Runtime::Node | Runtime::Bun => Some(Mode::Json),
        Runtime::Deno => None,
        Runtime::Other => None,
    }
}

/// The limits and options of the child's channel: Bun's JSON channel needs
/// Node's internal messages (`disconnect`, `newconn`...) marked with its
/// 0x02 byte, or it drops them.
pub fn channel_limits(app: &AppSpec) -> Limits {
    let mut l = Limits::default();
    l.mark_internal = app.runtime() == Runtime::Bun;
    l
}

/// The workers bind the app's port themselves, each on an `SO_REUSEPORT`
/// socket of its own (Bun cluster workers: Bun's servers never ask the
/// primary for a handle), so retiring one means taking its socket out of
/// the port's group first (`reuseport`).
pub fn listens_itself(app: &AppSpec) -> bool {
    app.runtime() == Runtime::Bun && app.exec_mode == ExecMode::Cluster
}

/// A warning for the daemon log, once per daemon: a Bun cluster app on a
/// host where a closing SO_REUSEPORT socket resets the connections queued
/// on it (`net.ipv4.tcp_migrate_req` off), so its reloads may fail a few
/// even though the retiring worker's socket leaves the group first.
pub fn launch_warning(app: &AppSpec) -> Option<String> {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if app.runtime() != Runtime::Bun || app.exec_mode != ExecMode::Cluster {
        return None;
    }
    let off = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").is_ok_and(|v| v.trim() == "0");
    if !off || WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    Some(format!(
        "App [{}]: Bun cluster workers listen on SO_REUSEPORT sockets of their own; with \
         net.ipv4.tcp_migrate_req = 0 the connections queued on a retiring worker's socket are reset when a \
         reload closes it (sysctl -w net.ipv4.tcp_migrate_req=1 makes reloads lose none)",
        app.name
    ))
}

/// The arguments placed before the script: `node_args` (`interpreter_args`)
/// as given, except for Deno, whose script runs under `deno run` with
/// permission flags: `run` is added unless the arguments start with it, and [`DENO_DEFAULT_PERMISSIONS`] unless they grant some
/// permission themselves (`-A`, `--allow-*`), so giving any permission
/// replaces the defaults.
pub fn interpreter_args(app: &AppSpec) -> Vec<String> {
    if app.runtime() != Runtime::Deno {
        return app.node_args.clone();
    }
    let mut out = Vec::with_capacity(app.node_args.len() + 1 + DENO_DEFAULT_PERMISSIONS.len());
    let has_subcommand = app.node_args.first().is_some_and(|a| a == "run");
    if !has_subcommand {
        out.push("run".to_string());
    }
    out.extend(app.node_args.iter().cloned());
    let grants = app.node_args.iter().any(|a| a == "-A" || a.starts_with("--allow-"));
    if !grants {
        out.extend(DENO_DEFAULT_PERMISSIONS.iter().map(|s| s.to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(interp: &str, mode: ExecMode, args: &[&str]) -> AppSpec {
        AppSpec {
            interpreter: interp.into(),
            exec_mode: mode,
            node_args: args.iter().map(|s| s.to_string()).collect(),
            ..AppSpec::default()
        }
    }

    #[test]
    fn channel_serialization_per_runtime() {
        assert_eq!(ipc_mode(&app("node", ExecMode::Cluster, &[])), Some(Mode::Advanced));
        assert_eq!(ipc_mode(&app("node", ExecMode::Fork, &[])), Some(Mode::Json));
        assert_eq!(ipc_mode(&app("/x/node_modules/.bin/bun", ExecMode::Cluster, &[])), Some(Mode::Json));
        assert_eq!(ipc_mode(&app("bun", ExecMode::Fork, &[])), Some(Mode::Json));
        assert_eq!(ipc_mode(&app("deno", ExecMode::Cluster, &[])), Some(Mode::Advanced));
        assert_eq!(ipc_mode(&app("deno", ExecMode::Fork, &[])), None);
        assert_eq!(ipc_mode(&app("python3", ExecMode::Fork, &[])), None);
    }

    #[test]
    fn deno_gets_run_and_default_permissions() {
        let a = interpreter_args(&app("deno", ExecMode::Cluster, &[]));
        assert_eq!(a[0], "run");
        assert!(a.contains(&"--allow-net".to_string()));
        let a =
            interpreter_args(&app("deno", ExecMode::Cluster, &["--allow-net=0.0.0.0:3000", "--allow-env"]));
        assert_eq!(a, ["run", "--allow-net=0.0.0.0:3000", "--allow-env"]);
        let a = interpreter_args(&app("deno", ExecMode::Cluster, &["run", "-A"]));
        assert_eq!(a, ["run", "-A"]);
        let a = interpreter_args(&app("deno", ExecMode::Fork, &["--unstable-kv"]));
        assert_eq!(&a[..2], ["run", "--unstable-kv"]);
        assert!(a.contains(&"--allow-env".to_string()));
        // Other runtimes: as given.
        assert_eq!(interpreter_args(&app("bun", ExecMode::Cluster, &["--smol"])), ["--smol"]);
    }
}
