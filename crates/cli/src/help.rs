//! `pm2 --help`, `pm2 <command> --help`, `pm2 examples` and
//! `pm2 completion`: the same commands and options as pm2's, described in
//! Corral's words.

/// Global options: (flags as shown, description).
pub const OPTIONS: &[(&str, &str)] = &[
    ("-v --version", "print pm2 version"),
    ("-s --silent", "hide all messages"),
    ("--ext <extensions>", "watch only this file extensions"),
    ("-n --name <name>", "set a name for the process in the process list"),
    ("-m --mini-list", "display a compacted list without formatting"),
    ("--interpreter <interpreter>", "set a specific interpreter to use for executing app, default: node"),
    ("--interpreter-args <arguments>", "set arguments to pass to the interpreter (alias of --node-args)"),
    ("--node-args <node_args>", "space delimited arguments to pass to node"),
    ("-o --output <path>", "specify log file for stdout"),
    ("-e --error <path>", "specify log file for stderr"),
    ("-l --log [path]", "specify log file which gathers both stdout and stderr"),
    ("--filter-env [envs]", "filter out outgoing global values that contain provided strings"),
    ("--log-type <type>", "specify log output style (raw by default, json optional)"),
    ("--log-date-format <date format>", "add custom prefix timestamp to logs"),
    ("--time", "enable time logging"),
    ("--disable-logs", "disable all logs storage"),
    (
        "--env <environment_name>",
        "specify which set of environment variables from ecosystem file must be injected",
    ),
    ("-a --update-env", "force an update of the environment with restart/reload (-a <=> apply)"),
    ("-f --force", "force actions"),
    ("-i --instances <number>", "launch [number] instances (for networked app)(load balanced)"),
    ("--parallel <number>", "number of parallel actions (for restart/reload)"),
    ("--shutdown-with-message", "shutdown an application with process.send('shutdown') instead of a SIGINT"),
    ("-p --pid <pid>", "specify pid file"),
    ("-k --kill-timeout <delay>", "delay before sending final SIGKILL signal to process"),
    ("--listen-timeout <delay>", "listen timeout on application reload"),
    (
        "--max-memory-restart <memory>",
        "restart the app if an amount of memory is exceeded (in bytes, or 200M, 1G)",
    ),
    ("--restart-delay <delay>", "specify a delay between restarts (in milliseconds)"),
    ("--exp-backoff-restart-delay <delay>", "exponential backoff between restarts, starting at <delay> ms"),
    ("-x --execute-command", "execute a program using fork system"),
    ("--max-restarts [count]", "only restart the script COUNT times"),
    ("-u --user <username>", "define user when generating startup script"),
    ("--uid <uid>", "run target script with <uid> rights"),
    ("--gid <gid>", "run target script with <gid> rights"),
    ("--namespace <ns>", "start application within specified namespace"),
    ("--cwd <path>", "run target script from path <cwd>"),
    ("--hp <home path>", "define home path when generating startup script"),
    ("--wait-ip", "override systemd script to wait for full internet connectivity to launch pm2"),
    ("--service-name <name>", "define service name when generating startup script"),
    ("-c --cron <cron_pattern>", "restart a running process based on a cron pattern"),
    ("-c --cron-restart <cron_pattern>", "(alias) restart a running process based on a cron pattern"),
    ("-w --write", "write configuration in local folder"),
    ("--no-daemon", "run pm2 daemon in the foreground if it doesn't exist already"),
    ("--source-map-support", "force source map support"),
    ("--only <application-name>", "with json declaration, allow to only act on one application"),
    ("--disable-source-map-support", "disable source map support"),
    ("--wait-ready", "ask pm2 to wait for ready event from your app"),
    ("--merge-logs", "merge logs from different instances but keep error and out separated"),
    ("--watch [paths]", "watch application folder for changes"),
    ("--ignore-watch <folders|files>", "list of paths to ignore (name or regex)"),
    (
        "--watch-delay <delay>",
        "specify a restart delay after changing files (--watch-delay 4 (in sec) or 4000ms)",
    ),
    ("--no-color", "skip colors"),
    ("--no-vizion", "start an app without vizion feature (versioning control)"),
    ("--no-autostart", "add an app without automatic start"),
    ("--no-autorestart", "start an app without automatic restart"),
    ("--stop-exit-codes <exit_codes...>", "specify a list of exit codes that should skip automatic restart"),
    ("--no-treekill", "only kill the main process, not detached children"),
    ("--no-pmx", "start an app without pmx"),
    ("--no-automation", "start an app without pmx"),
    ("--trace", "enable transaction tracing with km"),
    ("--disable-trace", "disable transaction tracing with km"),
    ("--sort <field_name:sort>", "sort process according to field's name"),
    ("--attach", "attach logging after your start/restart/stop/reload"),
    ("--v8", "enable v8 data collecting"),
    ("--event-loop-inspector", "enable event-loop-inspector dump in pmx"),
    ("--deep-monitoring", "enable all monitoring tools (equivalent to --v8 --event-loop-inspector --trace)"),
    ("--instance-var <name>", "name of the variable holding the instance number (default NODE_APP_INSTANCE)"),
    ("--increment-var <name>", "variable incremented for each instance (e.g. PORT)"),
    ("--sticky", "route Socket.IO clients to one worker (sticky sessions on PM2_PORT)"),
    ("--readiness <probe>", "readiness probe: http:[port]/path, tcp:port, exec:<cmd> or a JSON probe object"),
    ("--liveness <probe>", "liveness probe (restarts the app when it fails): same forms as --readiness"),
    ("--startup-probe <probe>", "startup probe (readiness and liveness wait for it): same forms"),
    ("--notify", "give the app NOTIFY_SOCKET and wait for its sd_notify READY=1"),
    ("--watchdog <ms>", "WATCHDOG_USEC: restart the app when its WATCHDOG=1 pings stop"),
    ("--wait", "start/restart/reload: exit once the apps are ready (non-zero if they are not)"),
    ("--wait-timeout <s>", "how long --wait waits (default 60)"),
    (
        "--listen <host:port>",
        "bind host:port once in the daemon and pass it to every instance (systemd socket activation: fd 3, LISTEN_FDS)",
    ),
    ("--verbose", "with --version, also print Corral's own version"),
    ("-h --help", "output usage information"),
];

/// (flags, description).
pub type Opt = (&'static str, &'static str);
/// (usage, description, command-specific options).
pub type Command = (&'static str, &'static str, &'static [Opt]);

/// Commands pm2 lists.
pub const COMMANDS: &[Command] = &[
    (
        "start [options] [name|namespace|file|ecosystem|id...]",
        "start and daemonize an app",
        &[
            ("--watch", "watch folder for changes"),
            ("--fresh", "rebuild Dockerfile"),
            ("--daemon", "run container in Daemon mode (debug purposes)"),
            ("--container", "start application in container mode"),
            (
                "--dist",
                "with --container; change local Dockerfile to containerize all files in current directory",
            ),
            ("--image-name [name]", "with --dist; set the exported image name"),
            ("--node-version [major]", "with --container, set a specific major Node.js version"),
            ("--dockerdaemon", "for debugging purpose"),
        ],
    ),
    ("trigger <id|proc_name|namespace|all> <action_name> [params]", "trigger process action", &[]),
    ("deploy <file|environment>", "deploy your json", &[]),
    ("startOrRestart <json>", "start or restart JSON file", &[]),
    ("startOrReload <json>", "start or gracefully reload JSON file", &[]),
    ("pid [app_name]", "return pid of [app_name] or all", &[]),
    ("create", "return pid of [app_name] or all", &[]),
    ("startOrGracefulReload <json>", "start or gracefully reload JSON file", &[]),
    (
        "stop [options] <id|name|namespace|all|json|stdin...>",
        "stop a process",
        &[("--watch", "Stop watching folder for changes")],
    ),
    (
        "restart [options] <id|name|namespace|all|json|stdin...>",
        "restart a process",
        &[("--watch", "Toggle watching folder for changes")],
    ),
    (
        "scale <app_name> <number>",
        "scale up/down a process in cluster mode depending on total_number param",
        &[],
    ),
    ("profile:mem <app|id> [time]", "Sample the heap of an app's processes (.heapprofile)", &[]),
    ("profile:cpu <app|id> [time]", "Profile the cpu of an app's processes (.cpuprofile)", &[]),
    ("reload <id|name|namespace|all>", "reload processes (note that its for app using HTTP/HTTPS)", &[]),
    ("id <name>", "get process id by name", &[]),
    ("inspect <name>", "open (or close) the Node inspector of a process", &[]),
    (
        "delete|del <name|id|namespace|script|all|json|stdin...>",
        "stop and delete a process from pm2 process list",
        &[],
    ),
    ("sendSignal <signal> <pm2_id|name>", "send a system signal to the target process", &[]),
    ("ping", "ping pm2 daemon - if not up it will launch it", &[]),
    ("updatePM2", "update in-memory PM2 with local PM2", &[]),
    ("update", "(alias) update in-memory PM2 with local PM2", &[]),
    ("install|module:install [options] <module|git:/>", "install or update a module and run it forever", &[]),
    ("module:update <module|git:/>", "update a module and run it forever", &[]),
    ("module:generate [app_name]", "Generate a sample module in current folder", &[]),
    ("uninstall|module:uninstall <module>", "stop and uninstall a module", &[]),
    ("package [target]", "Check & Package TAR type module", &[]),
    ("publish|module:publish [options] [folder]", "Publish the module you are currently on", &[]),
    ("set [key] [value]", "sets the specified config <key> <value>", &[]),
    ("multiset <value>", "multiset eg \"key1 val1 key2 val2", &[]),
    ("get [key]", "get value for <key>", &[]),
    ("conf [key] [value]", "get / set module config values", &[]),
    ("config <key> [value]", "get / set module config values", &[]),
    ("unset <key>", "clears the specified config <key>", &[]),
    ("report", "give a full pm2 report for https://github.com/Unitech/pm2/issues", &[]),
    ("link [options] [secret] [public] [name]", "link with the pm2 monitoring dashboard", &[]),
    ("unlink", "unlink with the pm2 monitoring dashboard", &[]),
    ("monitor [name]", "monitor target process", &[]),
    ("unmonitor [name]", "unmonitor target process", &[]),
    ("open", "open the pm2 monitoring dashboard", &[]),
    ("plus|register [options] [command] [option]", "enable pm2 plus", &[]),
    ("login", "Login to pm2 plus", &[]),
    ("logout", "Logout from pm2 plus", &[]),
    (
        "dump|save [options]",
        "dump all processes for resurrecting them later",
        &[("--force", "force deletion of dump file, even if empty")],
    ),
    ("cleardump", "Create empty dump file", &[]),
    ("send <pm_id> <line>", "send stdin to <pm_id>", &[]),
    ("attach <pm_id> [comman]", "attach stdin/stdout to application identified by <pm_id>", &[]),
    ("resurrect", "resurrect previously dumped processes", &[]),
    ("unstartup [platform]", "disable the pm2 startup hook", &[]),
    ("startup [platform]", "enable the pm2 startup hook", &[]),
    ("logrotate", "copy default logrotate configuration", &[]),
    ("ecosystem|init [mode]", "generate a process conf file. (mode = null or simple)", &[]),
    ("reset <name|id|all>", "reset counters for process", &[]),
    ("describe <name|id>", "describe all parameters of a process", &[]),
    ("desc <name|id>", "(alias) describe all parameters of a process", &[]),
    ("info <name|id>", "(alias) describe all parameters of a process", &[]),
    ("show <name|id>", "(alias) describe all parameters of a process", &[]),
    ("env <id>", "list all environment variables of a process id", &[]),
    ("list|ls [options]", "list all processes", &[("--sort <field_name:sort>", "sort by a field")]),
    ("l", "(alias) list all processes", &[]),
    ("ps", "(alias) list all processes", &[]),
    ("status", "(alias) list all processes", &[]),
    ("jlist", "list all processes in JSON format", &[]),
    ("sysmonit", "start system monitoring daemon", &[]),
    ("slist|sysinfos [options]", "list system infos in JSON", &[("-t --tree", "show as tree")]),
    ("prettylist", "print json in a prettified JSON", &[]),
    ("monit", "launch termcaps monitoring", &[]),
    ("imonit", "launch legacy termcaps monitoring", &[]),
    ("dashboard|dash", "launch dashboard with monitoring and logs", &[]),
    ("flush [api]", "flush logs", &[]),
    ("reloadLogs", "reload all logs", &[]),
    (
        "logs [options] [id|name|namespace]",
        "stream logs file. Default stream all logs",
        &[
            ("--json", "json log output"),
            ("--format", "formated log output"),
            ("--raw", "raw output"),
            ("--err", "only shows error output"),
            ("--out", "only shows standard output"),
            ("--lines <n>", "output the last N lines, instead of the last 15 by default"),
            ("--timestamp [format]", "add timestamps (default format YYYY-MM-DD-HH:mm:ss)"),
            ("--nostream", "print logs without launching the log stream"),
            ("--highlight [value]", "highlights the given value"),
        ],
    ),
    ("kill", "kill daemon", &[]),
    ("pull <name> [commit_id]", "updates repository for a given app", &[]),
    ("forward <name>", "updates repository to the next commit for a given app", &[]),
    ("backward <name>", "downgrades repository to the previous commit for a given app", &[]),
    ("deepUpdate", "performs a deep update of PM2", &[]),
    (
        "serve|expose [options] [path] [port]",
        "serve a directory over http via port",
        &[
            ("--port [port]", "specify port to listen to"),
            ("--spa", "always serving index.html on inexistant sub path"),
            ("--basic-auth-username [username]", "set basic auth username"),
            ("--basic-auth-password [password]", "set basic auth password"),
            ("--monitor [frontend-app]", "frontend app monitoring (auto integrate snippet on html files)"),
        ],
    ),
    ("autoinstall", "", &[]),
    ("examples", "display pm2 usage examples", &[]),
    ("completion", "print the bash/zsh completion script (source it from your shell's rc file)", &[]),
];

fn option_lines(opts: &[(&str, &str)]) -> String {
    let width = opts.iter().map(|(f, _)| f.len()).max().unwrap_or(0).max(30);
    opts.iter().map(|(f, d)| format!("    {f:<width$}  {d}\n")).collect()
}

/// `pm2 --help` (and `pm2` alone).
pub fn usage(pm2_home: &std::path::Path) -> String {
    let mut s = String::from("\n  Usage: pm2 [cmd] app\n\n  Options:\n\n");
    s.push_str(&option_lines(OPTIONS));
    s.push_str("\n  Commands:\n\n");
    let width = COMMANDS.iter().map(|(u, _, _)| u.len()).max().unwrap_or(0);
    for (u, d, _) in COMMANDS {
        s.push_str(&format!("    {u:<width$}  {d}\n"));
    }
    s.push_str("    *\n\n");
    s.push_str("  Basic Examples:\n\n");
    s.push_str(EXAMPLES_SHORT);
    s.push_str(&format!("\n  Access pm2 files in {}\n", pm2_home.display()));
    s
}

/// The entry of `cmd` (a name or an alias).
fn find(cmd: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|(u, _, _)| {
        let names = u.split_whitespace().next().unwrap_or("");
        names.split('|').any(|n| n == cmd)
    })
}

/// `pm2 <cmd> --help`; None for an unknown command.
pub fn command_help(cmd: &str) -> Option<String> {
    let (u, d, opts) = find(cmd)?;
    let rest = u.split_once(' ').map(|x| x.1).unwrap_or("");
    let mut s = format!("\n  Usage: {cmd} {rest}\n\n  {d}\n\n  Options:\n\n");
    let mut all: Vec<(&str, &str)> = opts.to_vec();
    all.push(("-h, --help", "output usage information"));
    s.push_str(&option_lines(&all));
    Some(s)
}

const EXAMPLES_SHORT: &str = "    Start an app using all CPUs available + set a name :
    $ pm2 start app.js -i 0 --name \"api\"

    Restart the previous app launched, by name :
    $ pm2 restart api

    Stop the app :
    $ pm2 stop api

    Restart the app that is stopped :
    $ pm2 restart api

    Remove the app from the process list :
    $ pm2 delete api

    Kill daemon pm2 :
    $ pm2 kill

    Update pm2 :
    $ npm install pm2@latest -g ; pm2 update

    More examples in https://github.com/Unitech/pm2#usagefeatures
";

/// `pm2 examples`.
pub const EXAMPLES: &str = "
- Start and add a process to your list
  $ pm2 start app.js --name api

- Start an app in cluster mode on every CPU, load balanced (and Socket.IO sticky)
  $ pm2 start app.js -i max

- Show the process list / one process in detail
  $ pm2 ls
  $ pm2 describe api

- Stop, restart, reload (zero-downtime in cluster mode), delete
  $ pm2 stop api
  $ pm2 restart api --update-env
  $ pm2 reload api
  $ pm2 delete api

- Scale a cluster app to 4 instances / add 2
  $ pm2 scale api 4
  $ pm2 scale api +2

- Stream the logs of every app / of one, without streaming
  $ pm2 logs
  $ pm2 logs api --lines 100 --nostream

- Start every app of an ecosystem file, in its production env
  $ pm2 init simple
  $ pm2 start ecosystem.config.js --env production

- Restart on file changes, or on a schedule
  $ pm2 start app.js --watch --ignore-watch node_modules
  $ pm2 start app.js --cron-restart \"0 3 * * *\"

- Keep the process list across reboots
  $ pm2 save
  $ pm2 startup
  $ pm2 resurrect

- Serve a directory over http
  $ pm2 serve ./public 8080 --spa

- Run in the foreground (containers)
  $ pm2-runtime start ecosystem.config.js
";

/// `pm2 completion`: a bash completion script (zsh loads it through
/// `bashcompinit`). It completes command names, then app names and ids from
/// the running daemon.
pub fn completion_script(bin: &str) -> String {
    let cmds: Vec<&str> = COMMANDS
        .iter()
        .flat_map(|(u, _, _)| u.split_whitespace().next().unwrap_or("").split('|'))
        .filter(|c| !c.is_empty())
        .collect();
    format!(
        r#"###-begin-pm2-completion-###
#
# pm2 command completion script (bash, and zsh through bashcompinit)
#
# Installation: {bin} completion >> ~/.bashrc  (or ~/.zshrc)
# Or, maybe: {bin} completion > /etc/bash_completion.d/pm2
#
if type complete &>/dev/null || [ -n "${{ZSH_VERSION:-}}" ]; then
  if [ -n "${{ZSH_VERSION:-}}" ]; then
    autoload -U +X bashcompinit && bashcompinit
  fi
  _pm2_completion() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}"
    if [ "$COMP_CWORD" -eq 1 ]; then
      COMPREPLY=( $(compgen -W "{cmds}" -- "$cur") )
      return 0
    fi
    case "${{COMP_WORDS[1]}}" in
      start|stop|restart|reload|delete|del|describe|desc|info|show|logs|env|reset|scale|monitor|unmonitor|send|attach|sendSignal|pid|id|flush)
        local apps
        apps=$(pm2 jlist 2>/dev/null | grep -o '"name":"[^"]*"\|"pm_id":[0-9]*' | sed 's/.*://; s/"//g' | sort -u)
        COMPREPLY=( $(compgen -W "all $apps" -- "$cur") $(compgen -f -- "$cur") )
        ;;
      *)
        COMPREPLY=( $(compgen -f -- "$cur") )
        ;;
    esac
  }}
  complete -o default -F _pm2_completion pm2
fi
###-end-pm2-completion-###
"#,
        cmds = cmds.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_option_and_command() {
        let u = usage(std::path::Path::new("/h/.pm2"));
        assert!(OPTIONS.len() >= 70);
        for (f, _) in OPTIONS {
            assert!(u.contains(f), "{f}");
        }
        for cmd in ["start", "serve|expose", "startup", "send <pm_id> <line>", "completion", "examples"] {
            assert!(u.contains(cmd), "{cmd}");
        }
    }

    #[test]
    fn per_command_help_and_completion() {
        let h = command_help("logs").unwrap();
        assert!(h.contains("Usage: logs [options] [id|name|namespace]") && h.contains("--nostream"), "{h}");
        assert!(command_help("ls").unwrap().contains("list all processes"));
        assert!(command_help("nope").is_none());
        let c = completion_script("pm2");
        assert!(c.contains("complete -o default -F _pm2_completion pm2") && c.contains(" startOrRestart "));
    }
}
