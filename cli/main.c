/*
 * main.c -- mailferry: global options, the command table, dispatch.
 *
 *   mailferry [-c FILE] [-a ACCOUNT] COMMAND [--json] [ARGS...]
 *
 * Global options may also follow the command ("mailferry ls -a work INBOX").
 * A new command is one row of cmds[] and one cmd_*.c file.
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct cli_cmd cmds[] = {
	{ "status", "", "per account: folders, messages, sizes, last sync", 0, 0, CMD_JSON,
	  cmd_status },
	{ "folders", "", "the folders of an account with counts and last sync", 0, 0, CMD_JSON,
	  cmd_folders },
	{ "ls", "FOLDER", "the messages of a folder, one per line", 1, 1, CMD_JSON, cmd_ls },
	{ "show", "FOLDER UID", "write a message's original bytes to stdout", 2, 2, 0, cmd_show },
	{ "verify", "", "check every stored message against the index; exit 1 on problems", 0, 0, 0,
	  cmd_verify },
	{ "sync", "[--folder F] [--wait] [--allow-mass-delete]",
	  "ask mailferryd for a pass now (all accounts, or -a)", 0, 0,
	  CMD_JSON | CMD_SYNC, cmd_sync },
	{ "outbox", "[list|show ID|flush|retry ID|drop ID]", "the queue of mail to send", 0, 2,
	  CMD_JSON, cmd_outbox },
	/* dispatched before option parsing (its options are sendmail's): see run() */
	{ "sendmail", "[-t] [-i] [-f ADDR] [--] [RCPT...]", "queue a message from stdin (sendmail(8))",
	  0, 0, 0, NULL },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: mailferry [-c FILE] [-a ACCOUNT] COMMAND [--json] [ARGS...]\n"
		   "Inspect and operate the mirror and the outbox that mailferryd keeps.\n\ncommands:\n");
	for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
		char head[64];

		snprintf(head, sizeof head, "%s %s", cmds[i].name, cmds[i].args);
		fprintf(f, "  %-18s%s%s\n", head, strlen(head) > 18 ? "\n                     " : " ",
			cmds[i].summary);
	}
	fprintf(f, "\noptions:\n"
		   "  -c FILE       configuration (default $XDG_CONFIG_HOME/mailferry/config)\n"
		   "  -a ACCOUNT    the account (default: the first; status, verify, sync: all)\n"
		   "  --json        machine-readable output (status, folders, ls, sync, outbox list)\n"
		   "  --folder F    sync: only folder F\n"
		   "  --wait        sync: show progress until the pass ends; exit 1 if it failed\n"
		   "  --allow-mass-delete\n"
		   "                sync: accept the deletions the mass-deletion guard holds back\n"
		   "  -h, --help    this text\n"
		   "  -V, --version print the version\n"
		   "\nexit status: 0 ok, 1 error or problems found, 2 usage\n");
}

static const struct cli_cmd *cmd_find(const char *name)
{
	for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
		if (!strcmp(cmds[i].name, name))
			return &cmds[i];
	return NULL;
}

enum { OPT_JSON = 256, OPT_FOLDER, OPT_WAIT, OPT_ALLOW_MASS_DELETE };

static const struct option long_opts[] = {
	{ "help", no_argument, NULL, 'h' }, { "version", no_argument, NULL, 'V' },
	{ "json", no_argument, NULL, OPT_JSON }, { "config", required_argument, NULL, 'c' },
	{ "account", required_argument, NULL, 'a' },
	{ "folder", required_argument, NULL, OPT_FOLDER }, { "wait", no_argument, NULL, OPT_WAIT },
	{ "allow-mass-delete", no_argument, NULL, OPT_ALLOW_MASS_DELETE },
	{ NULL, 0, NULL, 0 },
};

/* One getopt pass; "+" stops at the first operand (the command before it, its
 * arguments after).  Returns -1 to go on, or an exit code. */
static int parse_opts(struct cli *cli, int argc, char **argv, const struct cli_cmd *cmd)
{
	int ch;

	opterr = 0;
	while ((ch = getopt_long(argc, argv, "+c:a:hV", long_opts, NULL)) != -1) {
		switch (ch) {
		case 'c': cli->conf_path = optarg; break;
		case 'a': cli->account = optarg; break;
		case 'h': usage(stdout); return CLI_EXIT_OK;
		case 'V': printf("mailferry %s\n", MF_VERSION); return CLI_EXIT_OK;
		case OPT_JSON:
			if (cmd && !(cmd->flags & CMD_JSON))
				return cli_usage_error("%s: --json is not supported", cmd->name);
			cli->json = true;
			break;
		case OPT_FOLDER:
		case OPT_WAIT:
		case OPT_ALLOW_MASS_DELETE:
			if (!cmd || !(cmd->flags & CMD_SYNC))
				return cli_usage_error("--%s is an option of 'sync'",
						       ch == OPT_WAIT ? "wait" : ch == OPT_FOLDER ? "folder" :
						       "allow-mass-delete");
			if (ch == OPT_FOLDER)
				cli->folder = optarg;
			else if (ch == OPT_WAIT)
				cli->wait = true;
			else
				cli->allow_mass_delete = true;
			break;
		default:
			if (optopt == 'c' || optopt == 'a')
				return cli_usage_error("option -%c needs an argument", optopt);
			if (optopt)
				return cli_usage_error("unknown option '-%c'", optopt);
			return cli_usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	return -1;
}

/* Command arguments: options anywhere, "--" ends them. */
static int parse_cmd_args(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv,
			  char ***args_r, int *nargs_r)
{
	char **args = xcalloc((size_t)argc + 1, sizeof *args);
	int n = 0, rc;

	*args_r = args;
	optind = 0;	/* glibc: a full reset of getopt's state */
	while (optind < argc || optind == 0) {
		if ((rc = parse_opts(cli, argc, argv, cmd)) >= 0)
			return rc;
		if (optind > 1 && !strcmp(argv[optind - 1], "--")) {
			while (optind < argc)
				args[n++] = argv[optind++];
			break;
		}
		if (optind < argc)
			args[n++] = argv[optind++];
	}
	*nargs_r = n;
	if (n < cmd->min_args || n > cmd->max_args)
		return cli_usage_error("usage: mailferry %s%s%s", cmd->name, *cmd->args ? " " : "",
				       cmd->args);
	return -1;
}

static int run(int argc, char **argv)
{
	struct cli cli = { 0 };
	const struct cli_cmd *cmd;
	char *path, **args = NULL;
	struct err e;
	int nargs = 0, rc;

	if ((rc = parse_opts(&cli, argc, argv, NULL)) >= 0)
		return rc;
	if (optind >= argc) {
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	cmd = cmd_find(argv[optind]);
	if (!cmd)
		return cli_usage_error("unknown command '%s'", argv[optind]);
	if (!cmd->run)	/* sendmail: its own options, its own exit codes */
		return cmd_sendmail_main("mailferry sendmail", cli.conf_path, cli.account,
					 argc - optind, argv + optind);
	if (cli.json && !(cmd->flags & CMD_JSON))
		return cli_usage_error("%s: --json is not supported", cmd->name);
	/* re-parse from the command name: getopt sees argv[0] = the command */
	rc = parse_cmd_args(&cli, cmd, argc - optind, argv + optind, &args, &nargs);
	if (rc >= 0) {
		free(args);
		return rc;
	}
	path = cli.conf_path ? xstrdup(cli.conf_path) : conf_default_path();
	if (conf_load(path, &cli.conf, &e) < 0) {
		free(path);
		free(args);
		return cli_error("%s", e.msg);
	}
	free(path);
	rc = cmd->run(&cli, nargs, args);
	conf_free(&cli.conf);
	free(args);
	return rc;
}

/* A pipe or socket whose reader went away polls as POLLERR (Linux), whatever
 * errno the failed write left behind. */
static bool stdout_reader_gone(void)
{
	struct pollfd p = { .fd = STDOUT_FILENO, .events = POLLOUT };

	return poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP));
}

/* Installed as mailferry-sendmail (or linked as sendmail): sendmail(8) itself. */
static bool called_as_sendmail(const char *argv0)
{
	const char *base = strrchr(argv0, '/');

	base = base ? base + 1 : argv0;
	return !strcmp(base, "mailferry-sendmail") || !strcmp(base, "sendmail");
}

int main(int argc, char **argv)
{
	int rc;

	setlocale(LC_CTYPE, "");	/* for the display width of names in tables */
	signal(SIGPIPE, SIG_IGN);	/* a closed pipe is EPIPE, handled where we write */
	log_init("mailferry", false);
	if (argc > 0 && called_as_sendmail(argv[0]))
		rc = cmd_sendmail_main("mailferry-sendmail", NULL, NULL, argc, argv);
	else
		rc = run(argc, argv);
	errno = 0;
	if (fflush(stdout) != 0 || ferror(stdout)) {
		int err = errno;

		if (err == EPIPE || stdout_reader_gone())
			return rc;	/* the reader went away (e.g. "| head"): not our error */
		cli_error("cannot write to stdout%s%s", err ? ": " : "", err ? strerror(err) : "");
		return CLI_EXIT_ERROR;
	}
	return rc;
}
