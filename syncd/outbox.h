/*
 * outbox.h (syncd) -- delivery of the accounts' outboxes inside mailferryd.
 *
 * One thread per account that has smtp_host, apart from the sync threads so
 * that a message never waits behind a long IMAP pass.  The thread watches
 * outbox/new (inotify) and delivers each queued message over one reused
 * SMTP session; store/outbox.h keeps the queue files and the per-recipient
 * state.  Policy (syncd/outbox.c): 2xx done; 4xx, timeouts and network
 * failures retried with backoff (1 min doubling to 1 h, +-10% jitter);
 * 5xx refused for that recipient only; outbox_max_age ends the retries.
 *
 * The entry points are for main.c and are called from its thread only.
 */
#ifndef MF_SYNCD_OUTBOX_H
#define MF_SYNCD_OUTBOX_H

#include "../store/conf.h"

/*
 * Starts the delivery threads.  ONCE: each delivers what is queued now (every
 * pending recipient, whatever its backoff) and ends; otherwise they run until
 * outboxd_stop().  C must outlive the threads.
 */
void outboxd_start(const struct conf *c, bool once);

/*
 * Daemon: asks the threads to stop (a transaction in progress is finished
 * first) and waits for them.  ONCE: waits for them to end.  Returns the number
 * of accounts whose outbox did not come out clean: a message still queued or
 * refused in this run, or the outbox could not be used.  With REPORT each of
 * them gets one "mailferryd: account NAME: outbox: ..." line on stderr.
 */
int outboxd_stop(bool report);

/*
 * The result of the account's last IMAP pass: UP after a failed pass means
 * the network is back, and every pending recipient of that account becomes
 * due at once.  Unknown accounts are ignored.
 */
void outboxd_network(const char *account, bool up);

#endif
