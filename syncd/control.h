/*
 * control.h -- the daemon's control socket (control.c; path and quoting in
 * store/ctl.h, the protocol at the top of control.c).
 */
#ifndef MF_CONTROL_H
#define MF_CONTROL_H

#include "../store/util.h"

/*
 * Binds the socket of the daemon reading CONFIG (store/ctl.h) and starts its
 * thread.  Returns 0; 1 when another daemon serves that socket (this one must
 * not run: e says so); -1 when the socket cannot be made (e).
 */
int control_start(const char *config, struct err *e);
/*
 * Tells the control thread that a pass ended (acct.c, when it settles the
 * tickets of `SYNC wait=1` requests), so that the answer goes out now rather
 * than at the next progress tick.  Any thread; harmless without a socket.
 */
void control_wake(void);
/* Closes the socket (removing it) and ends the thread; clients get EOF. */
void control_stop(void);

#endif
