/*
 * privsep.c - giving up root: the start-up policy, the checks of the
 * directories the workers write to, and the drop itself (see privsep.h).
 *
 * SYNOPSIS
 *	privsep_check_user(cfg, err, len);	master, at start and on reload
 *	privsep_check_dirs(cfg, err, len);	master, at start and on reload
 *	privsep_drop(cfg, "worker", err, len);	a child, before its first accept
 *
 * DESCRIPTION
 *	The drop, as Postfix's set_ugid() and OpenSMTPD's network process do
 *	it, in this order: tzset() (zoneinfo read while the files are still
 *	there); chroot(2) and chdir("/") when `chroot` is set; the
 *	capability bounding set emptied (as far as CAP_SETPCAP allows: a
 *	systemd unit may already have narrowed it); setgroups(1, &gid),
 *	setresgid, setresuid (all three ids: nothing saved to go back to);
 *	every capability cleared (capset: also the ones a non-root start may
 *	have been given, ambient ones included); PR_SET_NO_NEW_PRIVS.  Then
 *	it is verified: the ids are the user's, capget() reports no
 *	permitted or effective capability, and setuid(0) and setgid(0) fail.
 *	If they do not, the process aborts (log_panic): a worker that could
 *	become root again must never accept a connection.
 *
 *	With `user = "root"` nothing changes but chroot and no_new_privs.
 *	Started by another user (with `user` unset, or naming that same
 *	account, as under the systemd unit's User=), the process keeps that
 *	account; its capabilities (the unit's ambient CAP_NET_BIND_SERVICE)
 *	are cleared and no_new_privs set.
 *
 * DIAGNOSTICS
 *	"FILE: ..." or "FILE:LINE: ..." naming the key, in the caller's buffer.
 */
#include "autoconf.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "log.h"
#include "privsep.h"

#define CAP_LAST_TRIED	63	/* PR_CAPBSET_DROP until EINVAL, at most this */

#if defined(__SANITIZE_ADDRESS__)
#define BUILT_WITH_ASAN	1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BUILT_WITH_ASAN	1
#endif
#endif

/* Refused: root without `user`; see privsep.h. */
int
privsep_check_user(const struct config *cfg, char *err, size_t errlen)
{
	if (geteuid() != 0 || cfg->priv.user != NULL)
		return 0;
	snprintf(err, errlen, "%s: started as root without \"user\": the workers, which read "
	    "what clients send, would run as root; set user = \"smtpchain\"; (an unprivileged "
	    "account of their own, see smtpchain.conf(5)), or write user = \"root\"; to "
	    "run them as root anyway", cfg->file);
	return -1;
}

/*
 * Whether the workers run as a `user` that is not root: we are root and
 * drop to it, or we already are it (under systemd's User=).
 */
static bool
drops_user(const struct config *cfg)
{
	return cfg->priv.user != NULL && cfg->priv.uid != 0 &&
	    (geteuid() == 0 || geteuid() == cfg->priv.uid);
}

/* One directory the workers write to: ours alone.  0, or -1 with err. */
static int
check_dir(const struct config *cfg, const char *key, const char *dir, char *err, size_t errlen)
{
	char path[4096];
	struct stat st;

	if (snprintf(path, sizeof(path), "%s%s", cfg->priv.chroot ? cfg->priv.chroot : "",
	    dir) >= (int)sizeof(path)) {
		snprintf(err, errlen, "%s: %s: path too long", cfg->file, key);
		return -1;
	}
	if (stat(path, &st) == -1) {
		snprintf(err, errlen, "%s: %s %s: %s (create it, owned by %s, mode 0700)",
		    cfg->file, key, path, strerror(errno), cfg->priv.user);
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s: %s %s: not a directory", cfg->file, key, path);
		return -1;
	}
	if (st.st_uid != cfg->priv.uid) {
		snprintf(err, errlen, "%s: %s %s: owned by uid %ld, not by user \"%s\" (uid %ld)",
		    cfg->file, key, path, (long)st.st_uid, cfg->priv.user, (long)cfg->priv.uid);
		return -1;
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		snprintf(err, errlen, "%s: %s %s: mode %04o is group- or world-writable; "
		    "only user \"%s\" may write there", cfg->file, key, path,
		    (unsigned)(st.st_mode & 07777), cfg->priv.user);
		return -1;
	}
	return 0;
}

/* The directories the workers write to; see privsep.h. */
int
privsep_check_dirs(const struct config *cfg, char *err, size_t errlen)
{
	struct stat st;

	if (cfg->priv.chroot != NULL && stat(cfg->priv.chroot, &st) == -1) {
		snprintf(err, errlen, "%s: chroot %s: %s", cfg->file, cfg->priv.chroot,
		    strerror(errno));
		return -1;
	}
	if (cfg->priv.chroot != NULL && !S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s: chroot %s: not a directory", cfg->file, cfg->priv.chroot);
		return -1;
	}
	if (!drops_user(cfg))
		return 0;
	if (check_dir(cfg, "quarantine_dir", cfg->quarantine_dir, err, errlen) != 0 ||
	    check_dir(cfg, "spool_dir", cfg->spool_dir, err, errlen) != 0)
		return -1;
	return 0;
}

/* Empty the capability bounding set, as far as we may (EPERM: no CAP_SETPCAP). */
static void
drop_bounding_set(void)
{
	for (int cap = 0; cap <= CAP_LAST_TRIED; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == -1 && errno == EINVAL)
			break;
}

/* Clear every capability: permitted, effective, inheritable (and so ambient). */
static int
clear_caps(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];

	memset(d, 0, sizeof(d));
	return (int)syscall(SYS_capset, &h, d);
}

/* Whether any capability is still permitted or effective. */
static bool
has_caps(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];

	memset(d, 0, sizeof(d));
	if (syscall(SYS_capget, &h, d) == -1)
		return true;
	for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++)
		if (d[i].permitted || d[i].effective)
			return true;
	return false;
}

/* The drop is done: prove there is no way back, or abort. */
static void
verify_drop(uid_t uid, gid_t gid, const char *what)
{
	uid_t r, e, s;
	gid_t rg, eg, sg;

	if (getresuid(&r, &e, &s) != 0 || r != uid || e != uid || s != uid ||
	    getresgid(&rg, &eg, &sg) != 0 || rg != gid || eg != gid || sg != gid)
		log_panic("%s: the ids are not %ld:%ld after the drop", what, (long)uid, (long)gid);
	if (has_caps())
		log_panic("%s: capabilities left after the drop", what);
	if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
		log_panic("%s: no_new_privs is not set", what);
	if (setuid(0) != -1 || setgid(0) != -1 || seteuid(0) != -1)
		log_panic("%s: root could be regained after the drop", what);
}

/* Give up root for good; see privsep.h. */
int
privsep_drop(const struct config *cfg, const char *what, char *err, size_t errlen)
{
	bool root = geteuid() == 0;
	uid_t uid = cfg->priv.uid;
	gid_t gid = cfg->priv.gid;

	tzset();
	if (cfg->priv.chroot != NULL && (chroot(cfg->priv.chroot) == -1 || chdir("/") == -1)) {
		snprintf(err, errlen, "%s: chroot %s: %s", cfg->file, cfg->priv.chroot,
		    strerror(errno));
		return -1;
	}
	if (root && cfg->priv.user != NULL && uid == 0) {	/* user = "root", written out */
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1) {
			snprintf(err, errlen, "%s: no_new_privs: %s", what, strerror(errno));
			return -1;
		}
		return 0;
	}
	if (!root) {
		if (cfg->priv.user != NULL && uid != geteuid()) {
			snprintf(err, errlen, "%s:%d: user \"%s\": started as uid %ld, which cannot "
			    "change to uid %ld (start as root, or leave user unset)", cfg->file,
			    cfg->priv.line, cfg->priv.user, (long)geteuid(), (long)uid);
			return -1;
		}
		uid = geteuid();
		gid = getegid();
	} else {
		drop_bounding_set();
		if (setgroups(1, &gid) == -1 || setresgid(gid, gid, gid) == -1 ||
		    setresuid(uid, uid, uid) == -1) {
			snprintf(err, errlen, "%s:%d: user \"%s\": cannot become uid %ld gid %ld: %s",
			    cfg->file, cfg->priv.line, cfg->priv.user, (long)uid, (long)gid,
			    strerror(errno));
			return -1;
		}
	}
	if (clear_caps() == -1 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1) {
		snprintf(err, errlen, "%s: dropping capabilities: %s", what, strerror(errno));
		return -1;
	}
	if (root)
		verify_drop(uid, gid, what);
	else if (has_caps())
		log_panic("%s: capabilities left after the drop", what);
#ifdef BUILT_WITH_ASAN
	/* A change of uid made us not dumpable; LeakSanitizer ptraces us at exit. */
	prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
#endif
	return 0;
}
