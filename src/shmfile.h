/* shmfile.h -- open (making or replacing) a fully allocated shared file of
 * a given kind beside the database; see shmfile.c. */
#ifndef HOLDFAST_SHMFILE_H
#define HOLDFAST_SHMFILE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct {
    const char *what; /* for messages: "wake", "limits" */
    uint32_t magic;   /* the file's first word */
    uint32_t version; /* its second */
    off_t size;       /* its exact size */
} shmfile_kind;

/* An fd (O_RDWR, close-on-exec) on a complete file of kind k at path,
 * made or replaced if needed; or -errno with the reason in err.  A new
 * file is zero after its magic and version. */
int shmfile_open(const char *path, const shmfile_kind *k, char *err, size_t errlen);

#endif
