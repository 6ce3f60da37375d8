//! Running an app as another user: pm2's `uid` / `gid` (`--uid`, `--gid`,
//! ecosystem `uid` (alias `user`) and `gid`, names or numeric ids).
//!
//! pm2 resolves the names in its CLI (lib/Common.js: a user name or uid
//! through /etc/passwd, the gid defaulting to the user's primary group,
//! `HOME` set to the user's home) and hands `uid`/`gid` to
//! `child_process.spawn` (lib/God/ForkMode.js), which drops every
//! supplementary group. Corral resolves in the daemon, which is what spawns:
//!
//! - a name goes through `getpwnam`/`getgrnam`, a number is used as is; a
//!   `uid` without `gid` runs with that user's primary group; a `gid` without
//!   a `uid` is refused (pm2 fails on it too);
//! - the child gets the user's supplementary groups (`getgrouplist`, as
//!   `initgroups` would), then the gid, then the uid, in that order, between
//!   fork and exec: groups and gid can no longer be changed once the uid is
//!   dropped;
//! - `HOME`, `USER` and `LOGNAME` are those of the user, as `su -`/`sudo -i`
//!   set them (pm2 sets `HOME` only);
//! - a daemon that is not root can only run an app as itself: anything else
//!   is refused before anything is spawned, instead of failing in the child;
//! - the app's log and pid files are handed to the user, so a user who
//!   manages the app can read, rotate and truncate them.
//!
//! Names are resolved before `fork` (NSS lookups allocate and take locks);
//! the child only makes async-signal-safe system calls on data prepared in
//! the parent.

use corral_proto::AppSpec;
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;

/// A passwd entry, reduced to what running as that user needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// The user and group database (the system's through NSS, or a table in
/// tests).
pub trait UserDb {
    fn user_by_name(&self, name: &str) -> Result<Option<User>, String>;
    fn user_by_uid(&self, uid: u32) -> Result<Option<User>, String>;
    fn group_by_name(&self, name: &str) -> Result<Option<u32>, String>;
    /// Every group `user` belongs to, `gid` included (`getgrouplist`).
    fn groups_of(&self, user: &User, gid: u32) -> Result<Vec<u32>, String>;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrivError {
    #[error("User {0} cannot be found")]
    UnknownUser(String),
    #[error("Group {0} cannot be found")]
    UnknownGroup(String),
    #[error("{key}: expected a user/group name or a numeric id, got {got}")]
    Invalid { key: &'static str, got: String },
    #[error("gid {0} given without a uid: say which user the app runs as (--uid)")]
    GidWithoutUid(String),
    #[error("uid {0} has no passwd entry, so it has no primary group: give a gid too (--gid)")]
    NoPrimaryGroup(u32),
    #[error(
        "To use --uid and --gid please run pm2 as root: the daemon runs as uid {euid} gid {egid} and \
         cannot run an app as uid {uid} gid {gid}"
    )]
    NotPermitted { euid: u32, egid: u32, uid: u32, gid: u32 },
    #[error("cannot read the user database: {0}")]
    Db(String),
}

/// What the app asked for, resolved to ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, set before the gid and uid.
    pub groups: Vec<u32>,
    /// The passwd entry of `uid`, when there is one (for `HOME`, `USER`,
    /// `LOGNAME`).
    pub user: Option<User>,
    /// False when the daemon already runs as exactly this uid and gid (a
    /// non-root daemon asked to run an app as itself): nothing to switch.
    pub switch: bool,
}

enum Id {
    Name(String),
    Num(u32),
}

fn parse(key: &'static str, v: Option<&Value>) -> Result<Option<Id>, PrivError> {
    let invalid = |got: String| PrivError::Invalid { key, got };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() {
                // pm2 ignores a falsy uid/gid.
                Ok(None)
            } else if s.bytes().all(|b| b.is_ascii_digit()) {
                match s.parse::<u32>() {
                    Ok(n) if n != u32::MAX => Ok(Some(Id::Num(n))),
                    _ => Err(invalid(s.to_string())),
                }
            } else {
                Ok(Some(Id::Name(s.to_string())))
            }
        }
        // u32::MAX is (uid_t)-1, "leave unchanged" to setuid/chown.
        Some(Value::Number(n)) => match n.as_u64() {
            Some(n) if n < u64::from(u32::MAX) => Ok(Some(Id::Num(n as u32))),
            _ => Err(invalid(n.to_string())),
        },
        Some(other) => Err(invalid(other.to_string())),
    }
}

/// Resolves an app's `uid` / `gid` values (as stored: string or number).
/// `Ok(None)`: neither is set, the app runs as the daemon does.
pub fn resolve(
    uid: Option<&Value>,
    gid: Option<&Value>,
    db: &dyn UserDb,
) -> Result<Option<Creds>, PrivError> {
    let uid = parse("uid", uid)?;
    let gid = parse("gid", gid)?;
    let uid = match (uid, gid.as_ref()) {
        (None, None) => return Ok(None),
        (None, Some(g)) => {
            return Err(PrivError::GidWithoutUid(match g {
                Id::Name(n) => n.clone(),
                Id::Num(n) => n.to_string(),
            }))
        }
        (Some(u), _) => u,
    };
    let (uid, user) = match uid {
        Id::Name(name) => {
            let u = db.user_by_name(&name).map_err(PrivError::Db)?.ok_or(PrivError::UnknownUser(name))?;
            (u.uid, Some(u))
        }
        Id::Num(n) => (n, db.user_by_uid(n).map_err(PrivError::Db)?),
    };
    let gid = match gid {
        Some(Id::Name(name)) => {
            db.group_by_name(&name).map_err(PrivError::Db)?.ok_or(PrivError::UnknownGroup(name))?
        }
        Some(Id::Num(n)) => n,
        None => user.as_ref().map(|u| u.gid).ok_or(PrivError::NoPrimaryGroup(uid))?,
    };
    let mut groups = match &user {
        Some(u) => db.groups_of(u, gid).map_err(PrivError::Db)?,
        None => Vec::new(),
    };
    groups.insert(0, gid);
    let mut seen = std::collections::BTreeSet::new();
    groups.retain(|g| seen.insert(*g));
    Ok(Some(Creds { uid, gid, groups, user, switch: true }))
}

/// Whether a daemon running as `euid`/`egid` may run the app with `creds`:
/// root may run it as anyone; anyone else only as exactly itself (then
/// there is nothing to switch).
pub fn decide(mut creds: Creds, euid: u32, egid: u32) -> Result<Creds, PrivError> {
    if euid == 0 {
        creds.switch = true;
        Ok(creds)
    } else if creds.uid == euid && creds.gid == egid {
        creds.switch = false;
        Ok(creds)
    } else {
        Err(PrivError::NotPermitted { euid, egid, uid: creds.uid, gid: creds.gid })
    }
}

/// The system's user database, through NSS.
pub struct SystemDb;

fn nix_user(u: nix::unistd::User) -> User {
    User {
        name: u.name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        home: u.dir.to_string_lossy().into_owned(),
    }
}

impl UserDb for SystemDb {
    fn user_by_name(&self, name: &str) -> Result<Option<User>, String> {
        nix::unistd::User::from_name(name).map(|u| u.map(nix_user)).map_err(|e| e.to_string())
    }
    fn user_by_uid(&self, uid: u32) -> Result<Option<User>, String> {
        nix::unistd::User::from_uid(uid.into()).map(|u| u.map(nix_user)).map_err(|e| e.to_string())
    }
    fn group_by_name(&self, name: &str) -> Result<Option<u32>, String> {
        nix::unistd::Group::from_name(name).map(|g| g.map(|g| g.gid.as_raw())).map_err(|e| e.to_string())
    }
    fn groups_of(&self, user: &User, gid: u32) -> Result<Vec<u32>, String> {
        let name = std::ffi::CString::new(user.name.as_str()).map_err(|e| e.to_string())?;
        nix::unistd::getgrouplist(&name, gid.into())
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .map_err(|e| e.to_string())
    }
}

/// Resolves and checks an app's `uid`/`gid` against this daemon's identity.
pub fn for_app(app: &AppSpec) -> Result<Option<Creds>, PrivError> {
    let Some(creds) = resolve(app.extra.get("uid"), app.extra.get("gid"), &SystemDb)? else {
        return Ok(None);
    };
    // SAFETY: geteuid/getegid cannot fail and touch no memory.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    decide(creds, euid, egid).map(Some)
}

/// Checks an app about to be started (or restarted with a new spec) and
/// stores its `uid`/`gid` as numeric ids, as pm2 shows them in `jlist` and
/// saves them in `dump.pm2` (a uid alone gets its user's primary gid).
pub fn normalize(app: &mut AppSpec) -> Result<(), PrivError> {
    if let Some(c) = for_app(app)? {
        app.extra.insert("uid".into(), Value::from(c.uid));
        app.extra.insert("gid".into(), Value::from(c.gid));
    }
    Ok(())
}

impl Creds {
    /// `HOME`, `USER`, `LOGNAME` of the user the app runs as.
    pub fn apply_env(&self, env: &mut BTreeMap<String, String>) {
        if let Some(u) = &self.user {
            env.insert("HOME".into(), u.home.clone());
            env.insert("USER".into(), u.name.clone());
            env.insert("LOGNAME".into(), u.name.clone());
        }
    }

    /// Makes the child switch to these credentials before exec. Register
    /// it after every other `pre_exec` hook that needs privileges.
    pub fn apply(&self, cmd: &mut std::process::Command) {
        if !self.switch {
            return;
        }
        let groups: Vec<libc::gid_t> = self.groups.clone();
        let (uid, gid) = (self.uid, self.gid);
        // SAFETY: the hook runs between fork and exec and only calls
        // setgroups, setgid and setuid (async-signal-safe) on data prepared
        // before the fork; it allocates nothing. Order matters: once the uid
        // is dropped, groups and gid can no longer be changed.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// Hands a file the daemon created for the app (log, pid) to the app's
    /// user. Only a regular file with a single link that is not a symlink
    /// is touched, through the descriptor just opened: a user who can write
    /// the log directory must not get the daemon to give away another file
    /// by putting a link in its place.
    pub fn give(&self, path: &str) {
        if !self.switch || path == "/dev/null" {
            return;
        }
        let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
        else {
            return;
        };
        let Ok(m) = f.metadata() else { return };
        use std::os::unix::fs::MetadataExt;
        if !m.file_type().is_file() || m.nlink() != 1 || (m.uid(), m.gid()) == (self.uid, self.gid) {
            return;
        }
        // SAFETY: fchown on a descriptor we own.
        if unsafe { libc::fchown(f.as_raw_fd(), self.uid, self.gid) } != 0 {
            crate::dlog::error(&format!(
                "cannot give {path} to uid {} gid {}: {}",
                self.uid,
                self.gid,
                std::io::Error::last_os_error()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Table;

    fn u(name: &str, uid: u32, gid: u32) -> User {
        User { name: name.into(), uid, gid, home: format!("/home/{name}") }
    }

    impl UserDb for Table {
        fn user_by_name(&self, name: &str) -> Result<Option<User>, String> {
            Ok(match name {
                "nobody" => Some(u("nobody", 65534, 65534)),
                "www" => Some(u("www", 33, 33)),
                _ => None,
            })
        }
        fn user_by_uid(&self, uid: u32) -> Result<Option<User>, String> {
            Ok(match uid {
                65534 => Some(u("nobody", 65534, 65534)),
                33 => Some(u("www", 33, 33)),
                _ => None,
            })
        }
        fn group_by_name(&self, name: &str) -> Result<Option<u32>, String> {
            Ok(match name {
                "nogroup" => Some(65534),
                "adm" => Some(4),
                _ => None,
            })
        }
        fn groups_of(&self, user: &User, gid: u32) -> Result<Vec<u32>, String> {
            Ok(if user.name == "www" { vec![gid, 4] } else { vec![gid] })
        }
    }

    fn r(uid: Value, gid: Value) -> Result<Option<Creds>, PrivError> {
        let opt = |v: Value| if v.is_null() { None } else { Some(v) };
        resolve(opt(uid).as_ref(), opt(gid).as_ref(), &Table)
    }

    #[test]
    fn nothing_set_is_nothing_to_do() {
        assert_eq!(r(Value::Null, Value::Null), Ok(None));
        assert_eq!(r(json!(""), Value::Null), Ok(None));
    }

    #[test]
    fn a_name_resolves_with_its_primary_group_and_supplementary_groups() {
        let c = r(json!("www"), Value::Null).unwrap().unwrap();
        assert_eq!((c.uid, c.gid, c.groups.clone()), (33, 33, vec![33, 4]));
        assert_eq!(c.user.as_ref().map(|u| u.home.as_str()), Some("/home/www"));
        let mut env = BTreeMap::from([("HOME".to_string(), "/root".to_string())]);
        c.apply_env(&mut env);
        assert_eq!(env["HOME"], "/home/www");
        assert_eq!(env["USER"], "www");
        assert_eq!(env["LOGNAME"], "www");
    }

    #[test]
    fn numbers_are_used_as_is_and_strings_of_digits_are_numbers() {
        let c = r(json!(65534), json!(4)).unwrap().unwrap();
        assert_eq!((c.uid, c.gid, c.groups), (65534, 4, vec![4]));
        let c = r(json!("33"), json!("adm")).unwrap().unwrap();
        assert_eq!((c.uid, c.gid, c.groups), (33, 4, vec![4]));
        // An id without a passwd entry runs with no supplementary group.
        let c = r(json!(4242), json!(4343)).unwrap().unwrap();
        assert_eq!((c.uid, c.gid, c.groups, c.user), (4242, 4343, vec![4343], None));
    }

    #[test]
    fn unknown_names_and_bad_values_are_refused() {
        assert_eq!(r(json!("nobdy"), Value::Null), Err(PrivError::UnknownUser("nobdy".into())));
        assert_eq!(r(json!("nobody"), json!("nogrp")), Err(PrivError::UnknownGroup("nogrp".into())));
        assert_eq!(r(json!(4242), Value::Null), Err(PrivError::NoPrimaryGroup(4242)));
        assert_eq!(r(Value::Null, json!("nogroup")), Err(PrivError::GidWithoutUid("nogroup".into())));
        for bad in [json!(-1), json!(1.5), json!(4294967295u64), json!("4294967295"), json!([1]), json!(true)]
        {
            assert!(
                matches!(r(bad.clone(), Value::Null), Err(PrivError::Invalid { key: "uid", .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn only_root_may_switch_and_anyone_may_run_as_itself() {
        let c = r(json!("nobody"), Value::Null).unwrap().unwrap();
        assert!(decide(c.clone(), 0, 0).unwrap().switch);
        let same = decide(c.clone(), 65534, 65534).unwrap();
        assert!(!same.switch);
        assert_eq!(
            decide(c.clone(), 1000, 1000),
            Err(PrivError::NotPermitted { euid: 1000, egid: 1000, uid: 65534, gid: 65534 })
        );
        // Same user, other group: still a switch a non-root daemon cannot make.
        assert!(decide(c, 65534, 100).is_err());
    }

    #[test]
    fn give_skips_symlinks_and_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        let me = unsafe { (libc::geteuid(), libc::getegid()) };
        let target = dir.path().join("target");
        std::fs::write(&target, "x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let hard = dir.path().join("hard");
        std::fs::hard_link(&target, &hard).unwrap();
        // A uid/gid other than ours: if `give` wrongly acted as root it
        // would change the owner, which the assertions below would see.
        let c = Creds { uid: 65534, gid: 65534, groups: vec![], user: None, switch: true };
        c.give(link.to_str().unwrap());
        c.give(hard.to_str().unwrap());
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&target).unwrap();
        assert_eq!((m.uid(), m.gid()), me);
        if me.0 == 0 {
            let plain = dir.path().join("plain");
            std::fs::write(&plain, "x").unwrap();
            c.give(plain.to_str().unwrap());
            let m = std::fs::metadata(&plain).unwrap();
            assert_eq!((m.uid(), m.gid()), (65534, 65534));
        }
    }
}
