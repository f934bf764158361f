/*
 * live.h -- the live part of `mailferry status`: what the running mailferryd
 * says about each account and folder (through its control socket), next to
 * what the index says.  When no daemon serves this configuration, the index
 * alone answers (and status says so).
 */
#ifndef MF_CLI_LIVE_H
#define MF_CLI_LIVE_H

#include "cli.h"
#include "jparse.h"

struct cli_live {
	bool running;		/* a daemon serves this configuration */
	const char *note;	/* why not (NULL: none runs at all) */
	struct jv st;		/* its STATUS answer when running */
};

/* Asks the daemon once (never fails: a daemon that cannot be asked is "not running"). */
void cli_live_fetch(const struct cli *cli, struct cli_live *l);
void cli_live_free(struct cli_live *l);

/* Text lines for account A: daemon state, last error, and one line per folder. */
void cli_live_status_text(const struct cli *cli, const struct cli_live *l,
			  const struct conf_account *a);
/* JSON members of account A's object: "daemon" (null when not running) and
 * "folder_status" (one object per folder of the index). */
void cli_live_status_json(struct json *j, const struct cli *cli, const struct cli_live *l,
			  const struct conf_account *a);
/* The top-level "daemon" member. */
void cli_live_daemon_json(struct json *j, const struct cli_live *l);

#endif
