//! `pm2 startup` / `pm2 unstartup`: the systemd unit here, the
//! scripts of the other init systems pm2 supports (upstart/LSB, systemv,
//! openrc, launchd, rcd, rcd-openbsd, smf) in [`crate::initscripts`].

use crate::commands::{Cli, Code};
use crate::output;
use anyhow::{Context as _, Result};
use std::path::{Path, PathBuf};

const SYSTEMD_TEMPLATE: &str = "[Unit]
Description=PM2 process manager
Documentation=https://pm2.keymetrics.io/
After=%AFTER%

[Service]
Type=forking
User=%USER%
LimitNOFILE=infinity
LimitNPROC=infinity
LimitCORE=infinity
Environment=PATH=%NODE_PATH%:/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin
Environment=PM2_HOME=%HOME_PATH%
%SETTINGS%PIDFile=%HOME_PATH%/pm2.pid
Restart=on-failure

ExecStart=%PM2_PATH% resurrect
ExecReload=%PM2_PATH% reload all
ExecStop=%PM2_PATH% kill

[Install]
WantedBy=%WANTED_BY%
";

pub struct UnitParams<'a> {
    pub user: &'a str,
    pub node_path: &'a str,
    pub home_path: &'a str,
    pub pm2_path: &'a str,
    pub wait_ip: bool,
    /// Daemon settings (`PM2_PORT`...) the booted daemon must run with.
    pub settings: &'a [(String, String)],
}

/// The systemd unit text, as pm2 writes it.
pub fn systemd_unit(p: &UnitParams) -> String {
    let target = if p.wait_ip { "network-online.target" } else { "network.target" };
    let wanted = if p.wait_ip { "network-online.target" } else { "multi-user.target" };
    SYSTEMD_TEMPLATE
        .replace("%AFTER%", target)
        .replace("%WANTED_BY%", wanted)
        .replace("%USER%", p.user)
        .replace("%NODE_PATH%", p.node_path)
        .replace("%HOME_PATH%", p.home_path)
        .replace("%PM2_PATH%", p.pm2_path)
        .replace("%SETTINGS%", &settings_lines(p.settings))
}

/// Writes the unit; one holding a secret is 0600 before its content lands
/// (an existing 0644 unit is restricted first).
fn write_unit(target: &Path, unit: &str, secret: bool) -> std::io::Result<()> {
    if secret {
        write_private(target, unit, 0o600)
    } else {
        std::fs::write(target, unit)
    }
}

/// Writes `text` with `mode`, restricting an existing file first so the
/// secret never lands in a readable file.
fn write_private(target: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if target.exists() {
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(mode))?;
    }
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(target)?;
    f.write_all(text.as_bytes())
}

/// `Environment=` lines, quoted as systemd.exec(5) wants when a value holds
/// white space, quotes or backslashes.
fn settings_lines(settings: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in settings {
        // systemd expands `%` specifiers in Environment= values.
        let kv = format!("{k}={v}").replace('%', "%%");
        if kv.chars().any(|c| c.is_whitespace() || c == '"' || c == '\\' || c == '\'') {
            let escaped = kv.replace('\\', "\\\\").replace('"', "\\\"");
            out.push_str(&format!("Environment=\"{escaped}\"\n"));
        } else {
            out.push_str(&format!("Environment={kv}\n"));
        }
    }
    out
}

/// Canonical platform for a user-given name (pm2's aliases).
pub fn canonical_platform(s: &str) -> Option<&'static str> {
    Some(match s {
        "ubuntu" | "centos" | "arch" | "oracle" | "systemd" => "systemd",
        "ubuntu14" | "ubuntu12" | "upstart" => "upstart",
        "systemv" | "amazon" | "centos6" => "systemv",
        "macos" | "darwin" | "launchd" => "launchd",
        "freebsd" | "rcd" => "rcd",
        "openbsd" | "rcd-openbsd" => "rcd-openbsd",
        "openrc" => "openrc",
        "smf" | "sunos" | "solaris" => "smf",
        _ => return None,
    })
}

fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(bin)).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    })
}

/// First init system whose tool is in PATH, in pm2's order.
fn detect() -> Option<&'static str> {
    [
        ("systemctl", "systemd"),
        ("update-rc.d", "upstart"),
        ("chkconfig", "systemv"),
        ("rc-update", "openrc"),
        ("launchctl", "launchd"),
        ("sysrc", "rcd"),
        ("rcctl", "rcd-openbsd"),
        ("svcadm", "smf"),
    ]
    .into_iter()
    .find(|(b, _)| which(b).is_some())
    .map(|(_, p)| p)
}

pub fn whoami() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or NULL; the
    // name is copied out immediately.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if !pw.is_null() && !(*pw).pw_name.is_null() {
            return std::ffi::CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned();
        }
    }
    std::env::var("USER").unwrap_or_else(|_| "root".into())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Directory holding `node` (pm2 uses its own node's directory), else ours.
fn node_dir(exe: &Path) -> String {
    which("node")
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .or_else(|| exe.parent().map(Path::to_path_buf))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/usr/bin".into())
}

struct Plan {
    platform: &'static str,
    user: String,
    service: String,
    exe: PathBuf,
}

fn plan(cli: &Cli) -> Result<Option<Plan>> {
    let platform = match cli.args.positionals.first() {
        Some(p) => match canonical_platform(p) {
            Some(c) => c,
            None => {
                output::error(&format!("Unknown platform / init system name: {p}"));
                return Ok(None);
            }
        },
        None => match detect() {
            Some(p) => p,
            None => {
                output::error("Init system not found");
                return Ok(None);
            }
        },
    };
    let detected = detect();
    output::info(&format!("Init System found: {}", detected.unwrap_or(platform)));
    if let Some(d) = detected.filter(|d| *d != platform) {
        output::out("-----------------------------------------------------------");
        output::out(&format!(" PM2 detected {d} but you precised {platform}"));
        output::out(" Please verify that your choice is indeed your init system");
        output::out(" If you arent sure, just run : pm2 startup");
        output::out("-----------------------------------------------------------");
    }
    let user = cli.args.value("user").map(String::from).unwrap_or_else(|| {
        if is_root() {
            std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(whoami)
        } else {
            whoami()
        }
    });
    let service = cli
        .args
        .value("service-name")
        .map(String::from)
        .unwrap_or_else(|| crate::initscripts::default_service(platform, &user));
    let exe = std::env::current_exe().context("cannot find the pm2 executable")?;
    Ok(Some(Plan { platform, user, service, exe }))
}

fn print_sudo(cli: &Cli, cmd: &str, p: &Plan) {
    let home = cli
        .args
        .value("hp")
        .map(String::from)
        .or_else(|| std::env::var("HOME").ok())
        .unwrap_or_else(|| "/root".into());
    let mode = if cmd == "unstartup" { "unsetup" } else { "setup" };
    output::info(&format!("To {mode} the Startup Script, copy/paste the following command:"));
    // The absolute binary path, so the line works even where root's PATH
    // lacks it; a custom service name is carried over.
    let service = cli.args.value("service-name").map(|n| format!(" --service-name {n}")).unwrap_or_default();
    output::out(&format!(
        "sudo env PATH=$PATH:{} {} {cmd} {} -u {} --hp {home}{service}",
        node_dir(&p.exe),
        p.exe.display(),
        p.platform,
        p.user
    ));
}

fn run_commands(cmds: &[String]) -> Result<bool> {
    for c in cmds {
        output::info(&format!("[-] Executing: {c}..."));
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(c)
            .status()
            .with_context(|| format!("cannot run {c}"))?;
        if !st.success() {
            output::error(&format!("Command failed: {c} ({st})"));
            return Ok(false);
        }
        output::info("[v] Command successfully executed.");
    }
    Ok(true)
}

fn unsupported(platform: &str) -> Code {
    output::error(&format!("Unknown platform / init system name: {platform}"));
    1
}

fn user_home(cli: &Cli) -> String {
    cli.args
        .value("hp")
        .map(String::from)
        .or_else(|| std::env::var("HOME").ok())
        .unwrap_or_else(|| "/root".into())
}

/// Writes `text` to `target` and runs `cmds`, printing what pm2 prints
/// (`shown`: the text with secrets masked). A script holding a secret is
/// written owner-only (0700: init runs it as root).
fn install(
    platform: &str,
    text: &str,
    shown: &str,
    secret: bool,
    target: &str,
    cmds: &[String],
) -> Result<Code> {
    output::out(&format!("Platform {platform}"));
    output::out("Template");
    output::out(shown);
    output::out("Target path");
    output::out(target);
    output::out("Command list");
    output::out(&crate::inspect::inspect(&serde_json::json!(cmds)));
    output::info(&format!("Writing init configuration in {target}"));
    let written =
        if secret { write_private(Path::new(target), text, 0o700) } else { std::fs::write(target, text) };
    if let Err(e) = written {
        output::error("Failure when trying to write startup script");
        output::err(&format!("Cannot write {target}: {e}"));
        return Ok(1);
    }
    output::info("Making script booting at startup...");
    if !run_commands(cmds)? {
        return Ok(1);
    }
    output::out("+---------------------------------------+");
    output::info("Freeze a process list on reboot via:");
    output::out("$ pm2 save");
    output::out("");
    output::info("Remove init script via:");
    output::out(&format!("$ pm2 unstartup {platform}"));
    Ok(0)
}

pub fn startup(cli: &mut Cli) -> Result<Code> {
    let Some(p) = plan(cli)? else { return Ok(1) };
    if !is_root() {
        print_sudo(cli, "startup", &p);
        return Ok(1);
    }
    let home_path = match cli.args.value("hp") {
        Some(hp) => Path::new(hp).join(".pm2").display().to_string(),
        None => cli.home.display().to_string(),
    };
    let path_env = std::env::var("PATH").unwrap_or_default();
    let nd = node_dir(&p.exe);
    let node_path = if std::env::split_paths(&path_env).any(|d| d == Path::new(&nd)) {
        path_env.clone()
    } else {
        format!("{path_env}:{nd}")
    };
    let exe = p.exe.display().to_string();
    let settings = crate::client::daemon_settings(Path::new(&home_path));
    // The cluster secret and a Redis password are not printed, and the file
    // that holds them is readable by root only.
    let has_secret = settings.iter().any(|(k, _)| corral_proto::SECRET_SETTINGS.contains(&k.as_str()));
    let masked: Vec<(String, String)> = settings
        .iter()
        .map(|(k, v)| {
            let secret = corral_proto::SECRET_SETTINGS.contains(&k.as_str());
            (k.clone(), if secret { "***".to_string() } else { v.clone() })
        })
        .collect();
    if p.platform != "systemd" {
        let tmp = std::env::temp_dir().display().to_string();
        let Some(setup) = crate::initscripts::setup(p.platform, &p.service, &user_home(cli), &tmp) else {
            return Ok(unsupported(p.platform));
        };
        let render = |settings: &[(String, String)]| {
            crate::initscripts::render(
                setup.template,
                &exe,
                &node_path,
                &p.user,
                &home_path,
                &p.service,
                settings,
            )
        };
        let (text, shown) = (render(&settings), render(&masked));
        return install(p.platform, &text, &shown, has_secret, &setup.destination, &setup.commands);
    }
    let params = |settings| UnitParams {
        user: &p.user,
        node_path: &node_path,
        home_path: &home_path,
        pm2_path: &exe,
        wait_ip: cli.args.has("wait-ip"),
        settings,
    };
    let unit = systemd_unit(&params(&settings));
    let shown = systemd_unit(&params(&masked));
    let target = format!("/etc/systemd/system/{}.service", p.service);
    let cmds = vec![format!("systemctl enable {}", p.service)];
    output::out(&format!("Platform {}", p.platform));
    output::out("Template");
    output::out(&shown);
    output::out("Target path");
    output::out(&target);
    output::out("Command list");
    output::out(&crate::inspect::inspect(&serde_json::json!(cmds)));
    output::info(&format!("Writing init configuration in {target}"));
    if let Err(e) = write_unit(Path::new(&target), &unit, has_secret) {
        output::error(&format!("Cannot write {target}: {e}"));
        return Ok(1);
    }
    output::info("Making script booting at startup...");
    if !run_commands(&cmds)? {
        return Ok(1);
    }
    output::out("+---------------------------------------+");
    output::info("Freeze a process list on reboot via:");
    output::out("$ pm2 save");
    output::out("");
    output::info("Remove init script via:");
    output::out(&format!("$ pm2 unstartup {}", p.platform));
    Ok(0)
}

pub fn unstartup(cli: &mut Cli) -> Result<Code> {
    let Some(p) = plan(cli)? else { return Ok(1) };
    if !is_root() {
        print_sudo(cli, "unstartup", &p);
        return Ok(1);
    }
    let Some(cmds) = crate::initscripts::teardown(p.platform, &p.service, &user_home(cli)) else {
        return Ok(unsupported(p.platform));
    };
    // pm2 runs them as one `&&` chain and reports the end result.
    if run_commands(&cmds)? {
        output::info("Init file disabled.");
        Ok(0)
    } else {
        Ok(1)
    }
}

/// The logrotate(8) rule `pm2 logrotate` installs.
pub fn logrotate_rule(home: &str, user: &str) -> String {
    format!(
        "{home}/pm2.log {home}/logs/*.log {{\n        rotate 12\n        weekly\n        missingok\n        notifempty\n        compress\n        delaycompress\n        copytruncate\n        create 0640 {user} {user}\n}}\n"
    )
}

/// `pm2 logrotate [-u user]`: root only, writes `/etc/logrotate.d/pm2-<user>`.
pub fn logrotate(cli: &mut Cli) -> Result<Code> {
    if !is_root() {
        output::error("You have to run this command as root. Execute the following command:");
        let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "pm2".into());
        output::err(&format!("      sudo {exe} logrotate -u {}", whoami()));
        return Ok(1);
    }
    let user = cli.args.value("user").map(String::from).unwrap_or_else(whoami);
    let home = cli.home.display().to_string();
    let target = format!("/etc/logrotate.d/pm2-{user}");
    if let Err(e) = std::fs::write(&target, logrotate_rule(&home, &user)) {
        output::error(&format!("Cannot write {target}: {e}"));
        return Ok(1);
    }
    output::info(&format!("Logrotate configuration added to {target}"));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_matches_spec_template() {
        let u = systemd_unit(&UnitParams {
            user: "root",
            node_path: "/usr/bin",
            home_path: "/root/.pm2",
            pm2_path: "/usr/local/bin/pm2",
            wait_ip: false,
            settings: &[],
        });
        assert!(u.starts_with("[Unit]\nDescription=PM2 process manager\nDocumentation=https://pm2.keymetrics.io/\nAfter=network.target\n\n[Service]\nType=forking\nUser=root\n"));
        assert!(
            u.contains("Environment=PATH=/usr/bin:/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin\n")
        );
        assert!(u.contains("PIDFile=/root/.pm2/pm2.pid\nRestart=on-failure\n\nExecStart=/usr/local/bin/pm2 resurrect\nExecReload=/usr/local/bin/pm2 reload all\nExecStop=/usr/local/bin/pm2 kill\n"));
        assert!(u.ends_with("[Install]\nWantedBy=multi-user.target\n"));
        let w = systemd_unit(&UnitParams {
            wait_ip: true,
            ..UnitParams {
                user: "u",
                node_path: "",
                home_path: "",
                pm2_path: "",
                wait_ip: false,
                settings: &[],
            }
        });
        assert!(w.contains("After=network-online.target") && w.contains("WantedBy=network-online.target"));
    }

    #[test]
    fn unit_carries_the_daemon_settings() {
        let settings = vec![
            ("PM2_PORT".to_string(), "9090".to_string()),
            ("PM2_NODE_OPTIONS".to_string(), "--max-old-space-size=512 --trace-warnings".to_string()),
        ];
        let u = systemd_unit(&UnitParams {
            user: "root",
            node_path: "/usr/bin",
            home_path: "/root/.pm2",
            pm2_path: "/usr/local/bin/pm2",
            wait_ip: false,
            settings: &settings,
        });
        assert!(u.contains(
            "Environment=PM2_HOME=/root/.pm2\nEnvironment=PM2_PORT=9090\nEnvironment=\"PM2_NODE_OPTIONS=--max-old-space-size=512 --trace-warnings\"\nPIDFile="
        ));
    }

    #[test]
    fn a_unit_with_the_cluster_secret_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("pm2-root.service");
        std::fs::write(&target, "old").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_unit(&target, "Environment=PM2_CLUSTER_SECRET=s\n", true).unwrap();
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "Environment=PM2_CLUSTER_SECRET=s\n");
    }

    #[test]
    fn logrotate_rule_covers_daemon_and_app_logs() {
        let r = logrotate_rule("/root/.pm2", "root");
        assert!(r.starts_with("/root/.pm2/pm2.log /root/.pm2/logs/*.log {\n"));
        assert!(r.contains("copytruncate") && r.contains("rotate 12") && r.contains("weekly"));
    }

    #[test]
    fn platform_aliases() {
        assert_eq!(canonical_platform("ubuntu"), Some("systemd"));
        assert_eq!(canonical_platform("darwin"), Some("launchd"));
        assert_eq!(canonical_platform("centos6"), Some("systemv"));
        assert_eq!(canonical_platform("windows"), None);
    }
}
