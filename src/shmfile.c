/* shmfile.c -- the small shared files beside the database (<db>-wake,
 * <db>-limits): made whole, then put in place.
 *
 * Invariant: only a complete file ever appears at the path.  It is made
 * under a temporary name beside it, allocated (posix_fallocate, so that no
 * page of a mapping can SIGBUS on a full filesystem), stamped with its
 * magic and version, then linked into place (whoever links first wins; the
 * others use theirs).  A file that is not exactly of its kind (older or
 * newer version, wrong size, foreign magic) is replaced by rename() under
 * an flock of the stale file, so that racing openers replace it once.
 */
#include "shmfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define SHMFILE_OPEN_TRIES 16 /* rounds of "someone else changed the file" */

/* 1 if the open file fd is a complete file of this kind and version. */
static int shmfile_ours(int fd, const struct stat *st, const shmfile_kind *k) {
    uint32_t h[2];
    return st->st_size == k->size && pread(fd, h, sizeof h, 0) == (ssize_t)sizeof h &&
           h[0] == k->magic && h[1] == k->version;
}

/* Make a complete file under a temporary name beside path and put it
 * in place: link() when none exists (replace = 0; -EEXIST if another
 * process got there first), rename() over a stale one (replace = 1).
 * Returns the new file's fd, or -errno with err set. */
static int shmfile_create(const char *path, const shmfile_kind *k, int replace, char *err,
                          size_t errlen) {
    static _Atomic unsigned counter;
    char tmp[PATH_MAX];
    int fd = -1, rc;
    for (int i = 0; i < 100 && fd < 0; i++) {
        if (snprintf(tmp, sizeof tmp, "%s.%ld.%u.tmp", path, (long)getpid(),
                     atomic_fetch_add(&counter, 1)) >= (int)sizeof tmp) {
            snprintf(err, errlen, "path too long: %s", path);
            return -ENAMETOOLONG;
        }
        fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST) /* EEXIST: left by a dead process of our pid */
            break;
    }
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot create %s file %s: %s", k->what, path, strerror(e));
        return -e;
    }
    /* Allocate every page now, while failing is still clean. */
    if ((rc = posix_fallocate(fd, 0, k->size)) != 0) {
        snprintf(err, errlen, "cannot allocate %s file %s: %s", k->what, path, strerror(rc));
        goto fail;
    }
    uint32_t h[2] = {k->magic, k->version};
    if (pwrite(fd, h, sizeof h, 0) != (ssize_t)sizeof h) {
        rc = errno ? errno : EIO;
        snprintf(err, errlen, "cannot write %s file %s: %s", k->what, path, strerror(rc));
        goto fail;
    }
    if (replace) {
        rc = rename(tmp, path) == 0 ? 0 : errno;
    } else {
        rc = link(tmp, path) == 0 ? 0 : errno;
#ifdef RENAME_NOREPLACE
        if (rc == EPERM || rc == ENOTSUP || rc == ENOSYS) /* no hard links here */
            rc = renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0 ? 0 : errno;
#endif
        unlink(tmp); /* after link; a no-op after renameat2 */
    }
    if (rc == 0)
        return fd;
    if (rc != EEXIST)
        snprintf(err, errlen, "cannot put %s file %s in place: %s", k->what, path, strerror(rc));
fail:
    unlink(tmp);
    close(fd);
    return -rc;
}

/* An fd on a complete file at path, making or replacing it if needed. */
int shmfile_open(const char *path, const shmfile_kind *k, char *err, size_t errlen) {
    for (int round = 0; round < SHMFILE_OPEN_TRIES; round++) {
        struct stat st, now;
        int fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0 && errno == ENOENT) {
            fd = shmfile_create(path, k, 0, err, errlen);
            if (fd == -EEXIST)
                continue; /* another process made it: use theirs */
            return fd;
        }
        if (fd < 0 || fstat(fd, &st) != 0) {
            int e = errno;
            snprintf(err, errlen, "cannot open %s file %s: %s", k->what, path, strerror(e));
            if (fd >= 0)
                close(fd);
            return -e;
        }
        if (!S_ISREG(st.st_mode)) {
            close(fd);
            snprintf(err, errlen, "%s is not a regular file (holdfast's %s file goes there)",
                     path, k->what);
            return -EINVAL;
        }
        if (shmfile_ours(fd, &st, k)) {
            /* Ours, but maybe copied sparse: allocate its holes in place
             * (fallocate, never glibc's emulation, which would write over
             * live counters).  A filesystem that cannot do it is let be. */
            if (st.st_blocks * 512 < k->size && fallocate(fd, 0, 0, k->size) != 0 &&
                errno != EOPNOTSUPP && errno != ENOSYS) {
                int e = errno;
                close(fd);
                snprintf(err, errlen, "cannot allocate %s file %s: %s", k->what, path, strerror(e));
                return -e;
            }
            return fd;
        }
        /* Stale.  Whoever holds its lock replaces it; the others find a new
         * file at the path when they get the lock, and start over. */
        int locked;
        while ((locked = flock(fd, LOCK_EX)) != 0 && errno == EINTR)
            ;
        if (locked != 0) {
            int e = errno;
            close(fd);
            snprintf(err, errlen, "cannot lock %s file %s: %s", k->what, path, strerror(e));
            return -e;
        }
        if (stat(path, &now) != 0 || now.st_dev != st.st_dev || now.st_ino != st.st_ino ||
            fstat(fd, &st) != 0 || shmfile_ours(fd, &st, k)) {
            close(fd); /* replaced (or removed) meanwhile */
            continue;
        }
        int nfd = shmfile_create(path, k, 1, err, errlen);
        close(fd); /* and its lock */
        return nfd;
    }
    snprintf(err, errlen, "cannot open %s file %s: it keeps being replaced", k->what, path);
    return -EAGAIN;
}

