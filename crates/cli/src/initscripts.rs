//! Boot scripts for the init systems `pm2 startup` supports besides systemd
//! (whose unit lives in `startup.rs`): where each goes, the commands that
//! enable and disable it, and its text. Placeholders, as in the systemd
//! unit: `%PM2_PATH%`, `%NODE_PATH%` (the PATH the daemon gets), `%USER%`,
//! `%HOME_PATH%` (its PM2_HOME) and `%SERVICE_NAME%`; the daemon settings
//! (`PM2_PORT`...) the running daemon has, which the booted one must have
//! too, go where each format sets variables: `%SETTINGS_EXPORT%` (shell
//! `export` lines), `%SETTINGS_ENV%` (more `K='v'` words of an `env` command
//! inside a double-quoted `su -c`), `%SETTINGS_PLIST%`, `%SETTINGS_SMF%`.
//!
//! Every script runs `pm2 resurrect` at boot and `pm2 kill` at shutdown, as
//! the user given with `-u`, like pm2's.

/// An LSB init script: read by `update-rc.d` (Debian's "upstart" choice in
/// pm2) and by `chkconfig` (systemv).
const LSB: &str = r#"#!/bin/sh
### BEGIN INIT INFO
# Provides:          %SERVICE_NAME%
# Required-Start:    $local_fs $remote_fs $network
# Required-Stop:     $local_fs $remote_fs $network
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: PM2 process manager
# Description:       Starts the processes saved with `pm2 save` at boot.
### END INIT INFO
#
# chkconfig: 2345 98 02
# description: PM2 process manager

NAME=%SERVICE_NAME%
PM2=%PM2_PATH%
RUN_AS=%USER%
export PATH=%NODE_PATH%:$PATH
export PM2_HOME="%HOME_PATH%"
%SETTINGS_EXPORT%
pm2_as_user() {
    if [ "$RUN_AS" = "root" ]; then
        "$PM2" "$@"
    else
        su - "$RUN_AS" -c "env PATH='$PATH' PM2_HOME='$PM2_HOME'%SETTINGS_ENV% '$PM2' $*"
    fi
}

case "$1" in
    start)
        echo "Starting $NAME"
        pm2_as_user resurrect
        ;;
    stop)
        echo "Stopping $NAME"
        pm2_as_user kill
        ;;
    restart|force-reload)
        pm2_as_user kill
        pm2_as_user resurrect
        ;;
    reload)
        pm2_as_user reload all
        ;;
    status)
        pm2_as_user status
        ;;
    *)
        echo "Usage: /etc/init.d/$NAME {start|stop|restart|reload|force-reload|status}"
        exit 1
        ;;
esac
exit $?
"#;

const OPENRC: &str = r#"#!/sbin/openrc-run
# PM2 process manager: starts the processes saved with `pm2 save` at boot.

description="PM2 process manager"
extra_started_commands="reload"

PM2=%PM2_PATH%
RUN_AS=%USER%

depend() {
    need net
    after firewall
}

pm2_as_user() {
    su - "$RUN_AS" -s /bin/sh -c "env PATH='%NODE_PATH%':\$PATH PM2_HOME='%HOME_PATH%'%SETTINGS_ENV% '$PM2' $*"
}

start() {
    ebegin "Starting PM2"
    pm2_as_user resurrect
    eend $?
}

stop() {
    ebegin "Stopping PM2"
    pm2_as_user kill
    eend $?
}

reload() {
    ebegin "Reloading PM2"
    pm2_as_user reload all
    eend $?
}
"#;

const LAUNCHD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
    <key>Label</key>
    <string>%SERVICE_NAME%</string>
    <key>UserName</key>
    <string>%USER%</string>
    <key>RunAtLoad</key>
    <true/>
    <key>LaunchOnlyOnce</key>
    <true/>
    <key>KeepAlive</key>
    <false/>
    <key>ProgramArguments</key>
    <array>
        <string>%PM2_PATH%</string>
        <string>resurrect</string>
    </array>
    <key>EnvironmentVariables</key>
    <dict>
        <key>PATH</key>
        <string>%NODE_PATH%</string>
        <key>PM2_HOME</key>
        <string>%HOME_PATH%</string>
%SETTINGS_PLIST%    </dict>
    <key>StandardOutPath</key>
    <string>/tmp/%SERVICE_NAME%.out.log</string>
    <key>StandardErrorPath</key>
    <string>/tmp/%SERVICE_NAME%.err.log</string>
</dict>
</plist>
"#;

const RCD: &str = r#"#!/bin/sh
# PROVIDE: %SERVICE_NAME%
# REQUIRE: LOGIN
# KEYWORD: shutdown
#
# PM2 process manager: starts the processes saved with `pm2 save` at boot.
# Enable with: sysrc %SERVICE_NAME%_enable=YES

. /etc/rc.subr

name="%SERVICE_NAME%"
rcvar="%SERVICE_NAME%_enable"
extra_commands="reload status"
start_cmd="pm2_start"
stop_cmd="pm2_stop"
reload_cmd="pm2_reload"
status_cmd="pm2_status"

pm2_as_user() {
    su -m "%USER%" -c "env PATH='%NODE_PATH%':\$PATH PM2_HOME='%HOME_PATH%'%SETTINGS_ENV% '%PM2_PATH%' $*"
}
pm2_start() { pm2_as_user resurrect; }
pm2_stop() { pm2_as_user kill; }
pm2_reload() { pm2_as_user reload all; }
pm2_status() { pm2_as_user status; }

load_rc_config $name
: ${%SERVICE_NAME%_enable:="NO"}
run_rc_command "$1"
"#;

const RCD_OPENBSD: &str = r#"#!/bin/ksh
#
# PM2 process manager: starts the processes saved with `pm2 save` at boot.

daemon="%PM2_PATH%"
daemon_user="%USER%"

. /etc/rc.d/rc.subr

rc_bg=NO
rc_reload=YES

pm2_cmd() {
    ${rcexec} "env PATH='%NODE_PATH%':\$PATH PM2_HOME='%HOME_PATH%'%SETTINGS_ENV% ${daemon} $*"
}

rc_start() { pm2_cmd resurrect; }
rc_stop() { pm2_cmd kill; }
rc_reload() { pm2_cmd reload all; }
rc_check() { pm2_cmd ping; }

rc_cmd $1
"#;

const SMF: &str = r#"<?xml version="1.0"?>
<!DOCTYPE service_bundle SYSTEM "/usr/share/lib/xml/dtd/service_bundle.dtd.1">
<service_bundle type="manifest" name="%SERVICE_NAME%">
  <service name="%SERVICE_NAME%" type="service" version="1">
    <create_default_instance enabled="false"/>
    <single_instance/>
    <dependency name="network" grouping="require_all" restart_on="error" type="service">
      <service_fmri value="svc:/milestone/network:default"/>
    </dependency>
    <dependency name="filesystem" grouping="require_all" restart_on="error" type="service">
      <service_fmri value="svc:/system/filesystem/local"/>
    </dependency>
    <method_context>
      <method_credential user="%USER%"/>
      <method_environment>
        <envvar name="PATH" value="%NODE_PATH%"/>
        <envvar name="PM2_HOME" value="%HOME_PATH%"/>
%SETTINGS_SMF%      </method_environment>
    </method_context>
    <exec_method type="method" name="start" exec="%PM2_PATH% resurrect" timeout_seconds="60"/>
    <exec_method type="method" name="refresh" exec="%PM2_PATH% reload all" timeout_seconds="60"/>
    <exec_method type="method" name="stop" exec="%PM2_PATH% kill" timeout_seconds="60"/>
    <property_group name="startd" type="framework">
      <propval name="duration" type="astring" value="transient"/>
    </property_group>
    <template>
      <common_name>
        <loctext xml:lang="C">PM2 process manager</loctext>
      </common_name>
    </template>
  </service>
</service_bundle>
"#;

/// What `pm2 startup <platform>` writes and runs.
#[derive(Debug, PartialEq, Eq)]
pub struct Setup {
    pub service: String,
    pub template: &'static str,
    pub destination: String,
    pub commands: Vec<String>,
}

/// pm2's default service name for a platform (`-n/--service-name` wins).
pub fn default_service(platform: &str, user: &str) -> String {
    match platform {
        "openrc" => "pm2".into(),
        "launchd" => format!("pm2.{user}"),
        "rcd" | "rcd-openbsd" | "smf" => format!("pm2_{user}"),
        _ => format!("pm2-{user}"),
    }
}

/// The script, its place and the commands enabling it, for every platform
/// but systemd. `home` is the invoking user's home (launchd agents live
/// there); `tmp` the temporary directory (smf imports from it).
pub fn setup(platform: &str, service: &str, home: &str, tmp: &str) -> Option<Setup> {
    let s = service;
    let (template, destination, commands): (&'static str, String, Vec<String>) = match platform {
        "upstart" => {
            let d = format!("/etc/init.d/{s}");
            let c = vec![
                format!("chmod +x {d}"),
                "mkdir -p /var/lock/subsys".into(),
                format!("touch /var/lock/subsys/{s}"),
                format!("update-rc.d {s} defaults"),
            ];
            (LSB, d, c)
        }
        "systemv" => {
            let d = format!("/etc/init.d/{s}");
            let c = vec![
                format!("chmod +x {d}"),
                "mkdir -p /var/lock/subsys".into(),
                format!("touch /var/lock/subsys/{s}"),
                format!("chkconfig --add {s}"),
                format!("chkconfig {s} on"),
            ];
            (LSB, d, c)
        }
        "launchd" => {
            let dir = format!("{home}/Library/LaunchAgents");
            let d = format!("{dir}/{s}.plist");
            (LAUNCHD, d.clone(), vec![format!("mkdir -p {dir}"), format!("launchctl load -w {d}")])
        }
        "rcd" => {
            let d = format!("/usr/local/etc/rc.d/{s}");
            (RCD, d.clone(), vec![format!("chmod 755 {d}"), format!("sysrc {s}_enable=YES")])
        }
        "rcd-openbsd" => {
            let d = format!("/etc/rc.d/{s}");
            (
                RCD_OPENBSD,
                d.clone(),
                vec![format!("chmod 755 {d}"), format!("rcctl enable {s}"), format!("rcctl start {s}")],
            )
        }
        "openrc" => {
            let d = format!("/etc/init.d/{s}");
            (OPENRC, d.clone(), vec![format!("chmod +x {d}"), format!("rc-update add {s} default")])
        }
        "smf" => {
            let d = format!("{tmp}/{s}.xml");
            (SMF, d.clone(), vec![format!("svccfg import {d}"), format!("svcadm enable {s}")])
        }
        _ => return None,
    };
    Some(Setup { service: s.to_string(), template, destination, commands })
}

/// The commands `pm2 unstartup <platform>` runs (systemd included).
pub fn teardown(platform: &str, service: &str, home: &str) -> Option<Vec<String>> {
    let s = service;
    Some(match platform {
        "systemd" => vec![
            format!("systemctl stop {s}"),
            format!("systemctl disable {s}"),
            format!("rm /etc/systemd/system/{s}.service"),
        ],
        "upstart" => vec![
            format!("update-rc.d {s} disable"),
            format!("update-rc.d -f {s} remove"),
            format!("rm /etc/init.d/{s}"),
        ],
        "systemv" => vec![format!("chkconfig {s} off"), format!("rm /etc/init.d/{s}")],
        "openrc" => vec![
            format!("/etc/init.d/{s} stop"),
            format!("rc-update delete {s} default"),
            format!("rm /etc/init.d/{s}"),
        ],
        "launchd" => {
            vec![format!("launchctl remove {s} || true"), format!("rm {home}/Library/LaunchAgents/{s}.plist")]
        }
        "rcd" => vec![
            format!("/usr/local/etc/rc.d/{s} stop"),
            format!("sysrc -x {s}_enable"),
            format!("rm /usr/local/etc/rc.d/{s}"),
        ],
        "rcd-openbsd" => {
            vec![format!("rcctl stop {s}"), format!("rcctl disable {s}"), format!("rm /etc/rc.d/{s}")]
        }
        "smf" => vec![format!("svcadm disable {s}"), format!("svccfg delete -f {s}")],
        _ => return None,
    })
}

/// Fills a template's placeholders.
pub fn render(
    template: &str,
    pm2: &str,
    node_path: &str,
    user: &str,
    home_path: &str,
    service: &str,
    settings: &[(String, String)],
) -> String {
    let mut export = String::new();
    let mut env = String::new();
    let mut plist = String::new();
    let mut smf = String::new();
    for (k, v) in settings {
        export.push_str(&format!("export {k}={}\n", sh_quote(v)));
        env.push_str(&format!(" {k}={}", dq_escape(&sh_quote(v))));
        plist.push_str(&format!("        <key>{}</key>\n        <string>{}</string>\n", xml(k), xml(v)));
        smf.push_str(&format!("        <envvar name=\"{}\" value=\"{}\"/>\n", xml(k), xml(v)));
    }
    template
        .replace("%SETTINGS_EXPORT%", &export)
        .replace("%SETTINGS_ENV%", &env)
        .replace("%SETTINGS_PLIST%", &plist)
        .replace("%SETTINGS_SMF%", &smf)
        .replace("%PM2_PATH%", pm2)
        .replace("%NODE_PATH%", node_path)
        .replace("%USER%", user)
        .replace("%HOME_PATH%", home_path)
        .replace("%SERVICE_NAME%", service)
}

/// One shell word: single-quoted, a `'` as `'\''`.
fn sh_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

/// Text that stays itself inside a shell double-quoted string.
fn dq_escape(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn xml(v: &str) -> String {
    v.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_platform_has_a_script_and_a_teardown() {
        for p in ["upstart", "systemv", "launchd", "rcd", "rcd-openbsd", "openrc", "smf"] {
            let svc = default_service(p, "web");
            let s = setup(p, &svc, "/home/web", "/tmp").unwrap_or_else(|| panic!("{p}"));
            let text =
                render(s.template, "/usr/bin/pm2", "/usr/bin:/bin", "web", "/home/web/.pm2", &svc, &[]);
            assert!(!text.contains('%'), "{p}: placeholder left in\n{text}");
            assert!(text.contains("/usr/bin/pm2") && text.contains("resurrect"), "{p}");
            assert!(text.contains("/home/web/.pm2"), "{p}");
            assert!(!teardown(p, &svc, "/home/web").unwrap().is_empty(), "{p}");
        }
        assert!(setup("systemd", "x", "/", "/tmp").is_none());
        assert!(teardown("systemd", "x", "/").is_some());
    }

    #[test]
    fn names_and_places_follow_pm2() {
        assert_eq!(default_service("upstart", "u"), "pm2-u");
        assert_eq!(default_service("openrc", "u"), "pm2");
        assert_eq!(default_service("launchd", "u"), "pm2.u");
        assert_eq!(default_service("rcd", "u"), "pm2_u");
        let s = setup("upstart", "abcdef", "/root", "/tmp").unwrap();
        assert_eq!(s.destination, "/etc/init.d/abcdef");
        assert_eq!(s.commands.last().unwrap(), "update-rc.d abcdef defaults");
        let s = setup("launchd", "pm2.u", "/Users/u", "/tmp").unwrap();
        assert_eq!(s.destination, "/Users/u/Library/LaunchAgents/pm2.u.plist");
        let lsb = render(LSB, "/p", "/n", "u", "/h", "svc", &[]);
        assert!(lsb.starts_with("#!/bin/sh\n### BEGIN INIT INFO\n# Provides:          svc\n"));
    }

    #[test]
    fn every_script_carries_the_daemon_settings() {
        let settings = vec![("PM2_PORT".to_string(), "9100".to_string())];
        for p in ["upstart", "systemv", "launchd", "rcd", "rcd-openbsd", "openrc", "smf"] {
            let svc = default_service(p, "web");
            let s = setup(p, &svc, "/home/web", "/tmp").unwrap_or_else(|| panic!("{p}"));
            let text = render(s.template, "/usr/bin/pm2", "/usr/bin", "web", "/h/.pm2", &svc, &settings);
            let want: &[&str] = match p {
                "launchd" => &["<key>PM2_PORT</key>\n        <string>9100</string>"],
                "smf" => &["<envvar name=\"PM2_PORT\" value=\"9100\"/>"],
                "upstart" | "systemv" => &["export PM2_PORT='9100'\n", " PM2_PORT='9100' '$PM2' $*"],
                _ => &[" PM2_PORT='9100' "],
            };
            for w in want {
                assert!(text.contains(w), "{p} lacks {w:?}:\n{text}");
            }
        }
    }

    /// A value with quotes, `$`, backticks and spaces survives both shells:
    /// the outer double-quoted `su -c` string and the inner `env` words.
    #[test]
    fn settings_survive_nested_shell_quoting() {
        let v = "a b'c\"d$HOME`x`\\e";
        let inner = dq_escape(&sh_quote(v));
        // The outer shell turns the double-quoted text into the inner command.
        let cmd = format!("sh -c \"env V={inner} sh -c 'printf %s \\\"\\$V\\\"'\"");
        let out = std::process::Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), v, "{cmd}");
        assert_eq!(xml("a<&\">"), "a&lt;&amp;&quot;&gt;");
    }
}
