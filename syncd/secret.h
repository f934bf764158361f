/*
 * secret.h -- an account's password, from password_file or pass_cmd.
 *
 * The secret is never logged and never put in an error message; error messages
 * name the file or say "pass_cmd" and give the command's exit status.
 */
#ifndef MF_SECRET_H
#define MF_SECRET_H

#include "../store/util.h"
#include "../store/conf.h"

/*
 * Gets the IMAP password of A, or with SMTP the SMTP one: smtp_password_file /
 * smtp_pass_cmd when set, otherwise the account's own source.
 *   password_file: must be a regular file that group and other have no access
 *                  to (mode & 077 == 0); its first line, without CR/LF.
 *   pass_cmd:      run as /bin/sh -c CMD with stdin from /dev/null and stderr
 *                  inherited; the first line of its stdout, without CR/LF.  A
 *                  non-zero exit, a signal or an empty first line is an error.
 * Blocks until the command exits.  Returns 0 with *pw_r a new string (release
 * it with secret_free), or -1 with e set (ERR_CONFIG) and *pw_r NULL.
 */
int secret_get(const struct conf_account *a, bool smtp, char **pw_r, struct err *e);

/* Wipes (explicit_bzero) and frees *pw; sets it to NULL.  NULL is fine. */
void secret_free(char **pw);

#endif
