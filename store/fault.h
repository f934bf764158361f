/*
 * fault.h -- failure injection for tests (in the spirit of SQLite's fault.c).
 *
 * MF_FAULT names the calls to fail, comma separated:
 *
 *     MF_FAULT="fsync:3"            the 3rd data sync fails with EIO
 *     MF_FAULT="write:5:ENOSPC"     the 5th write fails with ENOSPC
 *     MF_FAULT="rename:2+"          the 2nd rename and every later one fail
 *     MF_FAULT="dirsync:1:crash"    the process kills itself with SIGKILL at
 *                                   the 1st directory fsync (a real kill -9)
 *
 * Points: see enum fault_point (names in fault.c).  Counting is per point and
 * starts when the variable is first read or at fault_reset().
 *
 * Cost when MF_FAULT is unset: FAULT() reads one global int.
 */
#ifndef MF_FAULT_H
#define MF_FAULT_H

#include <stdbool.h>

enum fault_point {
	FAULT_OPEN,	/* creating a message file in tmp/ */
	FAULT_WRITE,	/* every write(2) of message data */
	FAULT_FSYNC,	/* making message files durable (syncfs / fdatasync) */
	FAULT_RENAME,	/* every rename of a message file */
	FAULT_DIRSYNC,	/* fsync of cur/ after the renames */
	FAULT_COMMIT,	/* the index COMMIT of a batch */
	FAULT_UNLINK,	/* unlinks done after a commit (mirror expunge, replaced files) */
	FAULT_NPOINTS
};

/* -1: not read yet, 0: MF_FAULT unset, 1: armed. */
extern int fault_state;

/* True when this call must fail; errno is then set. */
bool fault_fire(enum fault_point p);
/* Re-reads MF_FAULT and resets every counter (tests call it after setenv). */
void fault_reset(void);

#define FAULT(p) (__builtin_expect(fault_state != 0, 0) && fault_fire(p))

#endif
