//! Who a container's processes run as, in numbers, from its `user` (`uid[:gid]`, names, or
//! empty for root) and, where a name or a missing group must be looked up, the image's
//! `/etc/passwd` and `/etc/group`. The rules are the runtime's (runc): a user alone runs
//! with the group its passwd entry gives (0 without one); a name must be in the files.

use crate::sandbox_dirs::Owner;

/// The owner when `user` says it all in numbers (`uid:gid`, or nothing: root).
pub(super) fn numeric(user: &str) -> Option<Owner> {
    if user.is_empty() {
        return Some(Owner::ROOT);
    }
    let (uid, gid) = user.split_once(':')?;
    Some(Owner {
        uid: uid.parse().ok()?,
        gid: gid.parse().ok()?,
    })
}

/// Whether resolving `user` needs `/etc/group` (a group given by name).
pub(super) fn needs_group(user: &str) -> bool {
    user.split_once(':')
        .is_some_and(|(_, group)| group.parse::<u32>().is_err())
}

/// `(name, id, group id)` of each well-formed line of a passwd (or, without the third,
/// group) file.
fn entries(file: &str) -> impl Iterator<Item = (&str, u32, Option<u32>)> {
    file.lines().filter_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let id = fields.next()?.parse().ok()?;
        let gid = fields.next().and_then(|g| g.parse().ok());
        Some((name, id, gid))
    })
}

/// Resolves `user` against the image's files (`None`: the image has no such file). The
/// error names what is missing.
pub(super) fn resolve(
    user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<Owner, String> {
    if let Some(owner) = numeric(user) {
        return Ok(owner);
    }
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = passwd.unwrap_or_default();
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => entries(passwd).find(|(_, id, _)| *id == uid),
        Err(_) => entries(passwd).find(|(name, _, _)| *name == user_part),
    };
    let uid = match (user_part.parse::<u32>(), entry) {
        (Ok(uid), _) => uid,
        (Err(_), Some((_, uid, _))) => uid,
        (Err(_), None) => return Err(user_part.to_string()),
    };
    let gid = match group_part {
        None => entry.and_then(|(_, _, gid)| gid).unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => entries(group.unwrap_or_default())
                .find(|(name, _, _)| *name == g)
                .map(|(_, gid, _)| gid)
                .ok_or_else(|| format!("{user_part}:{g}"))?,
        },
    };
    Ok(Owner { uid, gid })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          app:x:1000:1001::/home/app:/bin/sh\n\
                          broken line\n\
                          nobody:x:65534:65534:nobody:/:/bin/false\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:app\n";

    fn owner(uid: u32, gid: u32) -> Owner {
        Owner { uid, gid }
    }

    #[test]
    fn users_resolve_as_the_runtime_resolves_them() {
        assert_eq!(numeric(""), Some(Owner::ROOT));
        assert_eq!(numeric("65534:65534"), Some(owner(65534, 65534)));
        assert_eq!(numeric("1000"), None, "its group is in passwd");
        assert_eq!(numeric("app:50"), None);
        let resolve = |user| resolve(user, Some(PASSWD), Some(GROUP));
        assert_eq!(resolve("app"), Ok(owner(1000, 1001)));
        assert_eq!(resolve("1000"), Ok(owner(1000, 1001)));
        assert_eq!(
            resolve("4242"),
            Ok(owner(4242, 0)),
            "not in passwd: group 0"
        );
        assert_eq!(resolve("app:staff"), Ok(owner(1000, 50)));
        assert_eq!(resolve("nobody:7"), Ok(owner(65534, 7)));
        assert_eq!(resolve("ghost"), Err("ghost".to_string()));
        assert_eq!(resolve("app:ghosts"), Err("app:ghosts".to_string()));
        // A scratch image has no passwd at all.
        assert_eq!(super::resolve("4242", None, None), Ok(owner(4242, 0)));
        assert!(needs_group("app:staff"));
        assert!(!needs_group("app:50"));
        assert!(!needs_group("app"));
    }
}
