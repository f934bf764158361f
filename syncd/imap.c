/*
 * imap.c -- the IMAP session: the only file that uses libetpan's IMAP API.
 *
 * What libetpan gets wrong by default, and what this file does about it
 * (details and evidence in LIBETPAN.md):
 *  - It verifies no certificate.  We verify the chain and the host name
 *    (tls.c) right after the handshake and before any credential; on failure
 *    nothing more is sent.
 *  - Its timeout is copied into the stream only at connect time, so it is set
 *    before connecting.
 *  - A FETCH accumulates every response in memory unless a message-attribute
 *    handler is installed, and the handler only runs when a progress callback
 *    is installed too.  Both are installed for the life of the session; bodies
 *    go through the body handler straight into the caller's sink.
 *  - After a stream, parse or fatal error the connection is out of sync.  Such
 *    a session is marked dead; closing it closes the socket without LOGOUT
 *    (mailimap_free() would try a LOGOUT and wait for the answer).
 *  - A tagged BAD comes back as MAILIMAP_ERROR_PROTOCOL, the same code as a
 *    tag mismatch.  The raw tagged line is still in the stream buffer, so we
 *    look at it to tell a harmless BAD from a desynchronised stream.
 *
 * Everything the server sends is untrusted: replies are validated before they
 * reach a callback, and server text is cleaned before it reaches a log line.
 */
#include "imap.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <libetpan/libetpan.h>

/* ---- session ---- */

enum fetch_kind {
	FETCH_META,	/* by sequence numbers: every number of lo:hi once */
	FETCH_BODIES,	/* by UID ranges, bodies to the sink */
	FETCH_UIDMETA,	/* UID lo:*, metadata */
	FETCH_CHANGED,	/* UID lo:hi CHANGEDSINCE */
	FETCH_KEYS,	/* by UID ranges, size + date + Message-ID */
};

/* The FETCH command in progress.  libetpan's handlers are installed for the
 * whole session, so anything arriving while no fetch_op is active (or the op
 * has failed) is unsolicited and ignored. */
struct fetch_op {
	enum fetch_kind kind;
	struct err *e;
	bool failed;		/* refused or aborted: ignore the rest, the session dies */
	struct buf flags;	/* flag string of the item being handed out */

	uint32_t lo, hi;	/* META: sequence range asked for; UIDMETA, CHANGED: UIDs */
	imap_meta_cb *cb;
	void *ctx;
	imap_key_cb *kcb;	/* KEYS */
	struct buf hdr;		/* KEYS: the header section being received */
	size_t scanned;		/* bytes of libetpan's response buffer whose numbers
				 * were checked (raw_numbers_ok) */

	const struct imap_body_sink *sink;	/* BODIES */
	struct uid_range *ranges;	/* sorted, merged copy of what was asked for */
	size_t nranges;
	uint32_t *seen;		/* open-addressing set of UIDs (META: sequence numbers)
				 * already handed out */
	size_t seen_cap, seen_n;
	bool begun;		/* the current item's body was begun */
	int64_t bytes;		/* ...and has this many bytes so far */
};

struct imap {
	mailimap *m;
	char *host;
	int port;
	bool sni;		/* host is a name: send it as SNI (never an address, RFC 6066) */
	bool dead;		/* out of sync or closed: only imap_close() is valid */
	bool selected;		/* a mailbox is selected (EXAMINE succeeded) */
	char *sel_name;		/* ... this one */
	bool preauth;
	bool idling;		/* between imap_idle_start and imap_idle_done */
	bool idle_changed;	/* the server reported something while idling */
	bool unsolicited;	/* a FETCH arrived with no fetch_op (flag change) */
	uint32_t lib_exists;	/* libetpan's sel_exists after the last command */
	uint32_t exists;	/* our model of the message count (libetpan does
				 * not subtract VANISHED) */
	unsigned caps;
	struct imap_stats stats;
	struct fetch_op *op;
	char label[128];
	/* The deadline of the command in flight (io_watch): it started when the
	 * client last sent something; what arrived since buys more time. */
	int64_t timeout_ms;
	int64_t cmd_t0;
	int64_t cmd_bytes;
	bool too_slow;		/* io_watch cancelled the stream */
};

/* A server may answer one byte at a time, each read well within the read
 * timeout: a command must then still end.  It may take the timeout plus one
 * second for every MIN_RATE bytes received (a 60 MB message on a 100 kB/s
 * line is fine, a trickle is not); past that the stream is cancelled. */
#define MIN_RATE 1024

bool imap_is_dead(const struct imap *s)
{
	return s->dead;
}

void imap_cancel(struct imap *s)
{
	if (s && s->m && s->m->imap_stream)
		mailstream_cancel(s->m->imap_stream);
}

unsigned imap_caps(const struct imap *s)
{
	return s->caps;
}

const struct imap_stats *imap_stats(const struct imap *s)
{
	return &s->stats;
}

/* ---- server text and error mapping ---- */

/* Copies server text into out, replacing control bytes: it ends up in logs. */
static void clean_copy(char *out, size_t outsz, const char *p, size_t n)
{
	size_t j = 0;

	for (size_t i = 0; i < n && j + 1 < outsz; i++) {
		unsigned char c = (unsigned char)p[i];

		out[j++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	out[j] = '\0';
}

/* The last line libetpan read (the tagged or BYE line ending the response);
 * *len excludes the CRLF.  NULL when there is none. */
static const char *last_line(const struct imap *s, size_t *len)
{
	const MMAPString *b = s->m->imap_stream_buffer;
	size_t end, start;

	if (!b || !b->str || b->len == 0)
		return NULL;
	end = b->len;
	while (end > 0 && (b->str[end - 1] == '\n' || b->str[end - 1] == '\r'))
		end--;
	start = end;
	while (start > 0 && b->str[start - 1] != '\n')
		start--;
	*len = end - start;
	return end > start ? b->str + start : NULL;
}

/* The human part of the last response line: "NO [CODE] text" minus tag and
 * status word, so that "[AUTHENTICATIONFAILED] Authentication failed." survives. */
static void server_text(const struct imap *s, char *out, size_t outsz)
{
	size_t len = 0, i = 0;
	const char *p = last_line(s, &len);

	if (!p) {
		const char *r = s->m->imap_response;

		clean_copy(out, outsz, r ? r : "", r ? strlen(r) : 0);
		return;
	}
	for (int word = 0; word < 2; word++) {	/* tag or "*", then OK/NO/BAD/BYE */
		while (i < len && p[i] != ' ')
			i++;
		while (i < len && p[i] == ' ')
			i++;
	}
	clean_copy(out, outsz < 201 ? outsz : 201, p + i, len - i);
	if (outsz >= 201 && len - i > 200)
		strcpy(out + 197, "...");
}

/* libetpan reports a tagged BAD and a tagged line with the wrong tag alike. */
static bool last_was_tagged_bad(const struct imap *s)
{
	char want[24];
	size_t len = 0, n;
	const char *p = last_line(s, &len);

	n = (size_t)snprintf(want, sizeof want, "%d BAD", s->m->imap_tag);
	return p && len >= n && !strncasecmp(p, want, n) && (len == n || p[n] == ' ');
}

/* An untagged BYE followed by EOF ends in MAILIMAP_ERROR_STREAM: say why. */
static bool last_was_bye(const struct imap *s)
{
	size_t len = 0;
	const char *p = last_line(s, &len);

	return p && len >= 6 && !strncasecmp(p, "* BYE ", 6);
}

/* Maps a libetpan return code to an err and marks the session dead when the
 * stream cannot be trusted any more.  KIND is used for a tagged NO/BAD, which
 * leaves the session usable. */
static int fail(struct imap *s, int r, enum err_kind kind, const char *what, struct err *e)
{
	char text[256];

	s->stats.commands = s->m->imap_tag;
	switch (r) {
	case MAILIMAP_ERROR_CONNECTION_REFUSED:
		s->dead = true;
		return err_set(e, ERR_NET, "cannot connect to %s:%d", s->host, s->port);
	case MAILIMAP_ERROR_SSL:
		s->dead = true;
		return err_set(e, ERR_NET, "TLS handshake with %s:%d failed", s->host, s->port);
	case MAILIMAP_ERROR_STREAM:
		s->dead = true;
		if (last_was_bye(s)) {
			server_text(s, text, sizeof text);
			return err_set(e, ERR_NET, "%s: server closed the connection: %s", what, text);
		}
		if (s->too_slow)
			return err_set(e, ERR_NET, "%s: %s is too slow (%lld bytes in %lld s): "
				       "connection dropped", what, s->host, (long long)s->cmd_bytes,
				       (long long)((mono_ms() - s->cmd_t0) / 1000));
		return err_set(e, ERR_NET, "%s: connection to %s lost or timed out", what, s->host);
	case MAILIMAP_ERROR_FATAL:
	case MAILIMAP_ERROR_DONT_ACCEPT_CONNECTION:
		s->dead = true;
		server_text(s, text, sizeof text);
		return err_set(e, ERR_NET, "%s: server closed the connection: %s", what, text);
	case MAILIMAP_ERROR_PROTOCOL:
		if (last_was_tagged_bad(s))
			break;
		s->dead = true;
		return err_set(e, ERR_PROTO, "%s: response out of sequence", what);
	case MAILIMAP_ERROR_PARSE:
		s->dead = true;
		return err_set(e, ERR_PROTO, "%s: unparsable response from %s", what, s->host);
	case MAILIMAP_ERROR_MEMORY:	/* also: a body handler aborted mid-literal */
	case MAILIMAP_ERROR_BAD_STATE:
		s->dead = true;
		return err_set(e, ERR_PROTO, "%s: aborted (libetpan error %d)", what, r);
	default:
		break;
	}
	server_text(s, text, sizeof text);
	return err_set(e, kind, "%s: %s", what, text[0] ? text : "refused by the server");
}

static int check_alive(const struct imap *s, struct err *e)
{
	if (s->dead)
		return err_set(e, ERR_NET, "connection to %s already closed", s->host);
	if (s->idling)
		return err_set(e, ERR_PROTO, "a command while IDLE is running (call imap_idle_done)");
	return 0;
}

/* ---- numbers libetpan would wrap ---- */

static bool preceded_by(const char *p, size_t i, const char *word)
{
	size_t n = strlen(word);

	return i >= n && !strncasecmp(p + i - n, word, n);
}

/*
 * libetpan parses numbers into uint32_t (MODSEQ into uint64_t) without an
 * overflow check: "UID 4294967297" becomes UID 1 (verified).  So the raw text
 * of every response is checked before its values are used: each number that
 * stands alone (not part of an atom, not inside a quoted string) must fit in 32
 * bits, a MODSEQ / HIGHESTMODSEQ value in 63 (RFC 7162).  Literal contents are
 * not in the text (they go to the body handler).  Returns false and describes
 * the first offender in bad.
 */
static bool raw_numbers_ok(const char *p, size_t n, char *bad, size_t badsz)
{
	bool quoted = false;

	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		size_t j;

		if (quoted) {
			if (c == '\\')
				i++;
			else if (c == '"')
				quoted = false;
			continue;
		}
		if (c == '"') {
			quoted = true;
			continue;
		}
		if (c < '0' || c > '9')
			continue;
		for (j = i; j < n && p[j] >= '0' && p[j] <= '9'; j++)
			;
		if ((i > 0 && !strchr(" ([{:,*", p[i - 1])) || (j < n && !strchr(" )]}:,\r\n", p[j]))) {
			i = j;	/* part of an atom such as $Label1 */
			continue;
		}
		bool wide = preceded_by(p, i, "MODSEQ (") || preceded_by(p, i, "MODSEQ ");
		uint64_t v = 0, limit = wide ? (uint64_t)INT64_MAX : UINT32_MAX;
		bool over = false;

		for (size_t k = i; k < j; k++) {
			if (v > (limit - (uint64_t)(p[k] - '0')) / 10)
				over = true;
			else
				v = v * 10 + (uint64_t)(p[k] - '0');
		}
		if (over) {
			snprintf(bad, badsz, "%.*s%s", (int)(j - i > 30 ? 30 : j - i), p + i,
				 j - i > 30 ? "..." : "");
			return false;
		}
		i = j;
	}
	return true;
}

/* Checks the response text libetpan collected for the current command from
 * *from on (and moves *from to its end).  ERR_PROTO, session dead, on a bad number. */
static int check_numbers(struct imap *s, size_t *from, const char *what, struct err *e)
{
	const MMAPString *b = s->m->imap_stream_buffer;
	char bad[40];

	if (!b || !b->str)
		return 0;
	if (*from > b->len)	/* a new buffer: start over */
		*from = 0;
	if (!raw_numbers_ok(b->str + *from, b->len - *from, bad, sizeof bad)) {
		s->dead = true;
		return err_set(e, ERR_PROTO, "%s: the server sent the number %s, which does not fit "
			       "(UIDs, sizes and counts are 32-bit)", what, bad);
	}
	*from = b->len;
	return 0;
}

/* UIDs of the VANISHED responses (EARLIER or not) in the last response, capped. */
static uint32_t vanished_count(const struct imap *s, bool earlier)
{
	const struct mailimap_response_info *ri = s->m->imap_response_info;
	uint64_t n = 0;

	if (!ri)
		return 0;
	for (clistiter *c = clist_begin(ri->rsp_extension_list); c; c = clist_next(c)) {
		const struct mailimap_extension_data *x = clist_content(c);
		const struct mailimap_qresync_vanished *v;

		if (!x || !x->ext_extension || x->ext_extension->ext_id != MAILIMAP_EXTENSION_QRESYNC ||
		    x->ext_type != MAILIMAP_QRESYNC_TYPE_VANISHED || !(v = x->ext_data))
			continue;
		if (!v->qr_earlier != !earlier || !v->qr_known_uids)
			continue;
		for (clistiter *k = clist_begin(v->qr_known_uids->set_list); k; k = clist_next(k)) {
			const struct mailimap_set_item *it = clist_content(k);
			uint32_t a = it->set_first, b = it->set_last ? it->set_last : it->set_first;

			n += (a > b ? a - b : b - a) + 1;
		}
	}
	return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

/*
 * After each command in a selected folder: the message count may only go down
 * through EXPUNGE (libetpan subtracts those itself) or VANISHED (it does not).
 * A server whose EXISTS goes backwards has lost track of its own mailbox (or
 * lies); nothing it says about this folder can be trusted, so the session ends.
 */
static int exists_check(struct imap *s, const char *what, struct err *e)
{
	const struct mailimap_selection_info *si = s->m->imap_selection_info;
	const struct mailimap_response_info *ri = s->m->imap_response_info;
	uint32_t now, nexp, nvan, model;

	if (!s->selected || !si)
		return 0;
	now = si->sel_exists;
	nexp = ri && ri->rsp_expunged ? (uint32_t)clist_count(ri->rsp_expunged) : 0;
	nvan = vanished_count(s, false);
	model = s->exists > nvan ? s->exists - nvan : 0;
	if ((uint64_t)now + nexp + nvan < s->exists) {
		s->dead = true;
		return err_set(e, ERR_PROTO, "%s: the server's message count went down from %u to "
			       "%u without EXPUNGE or VANISHED", what, s->exists, now);
	}
	if (now + nexp == s->lib_exists)	/* no EXISTS in this response */
		s->exists = model >= nexp ? model - nexp : 0;
	else
		s->exists = now;
	s->lib_exists = now;
	return 0;
}

uint32_t imap_exists(const struct imap *s)
{
	return s->exists;
}

/* ---- debug trace ---- */

static bool mentions_login(const char *p, size_t n)
{
	for (size_t i = 0; i + 7 <= n; i++)
		if (!strncasecmp(p + i, " LOGIN ", 7))
			return true;
	return false;
}

/* One log line per chunk: line breaks inside it shown as " | ".  Returns how
 * much of p fitted. */
static size_t trace_copy(char *out, size_t outsz, const char *p, size_t n)
{
	size_t i, j = 0;

	for (i = 0; i < n && j + 3 < outsz; i++) {
		unsigned char c = (unsigned char)p[i];

		if (c == '\r' && i + 1 < n && p[i + 1] == '\n') {
			memcpy(out + j, " | ", 3);
			j += 3;
			i++;
		} else {
			out[j++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
		}
	}
	out[j] = '\0';
	return i;
}

/* libetpan's logger, installed for the life of the session: it sees every
 * chunk sent and received, so it keeps the per-command deadline, and with
 * -D imap it traces commands and the start of each chunk received.  LOGIN is
 * sent with the stream's privacy flag off, so it arrives here as
 * DATA_SENT_PRIVATE; a LOGIN seen as ordinary data is hidden all the same. */
static void trace(struct imap *s, int type, const char *str, size_t size);

static void io_watch(mailimap *m, int type, const char *str, size_t size, void *ctx)
{
	struct imap *s = ctx;
	int64_t now;

	switch (type) {
	case MAILSTREAM_LOG_TYPE_DATA_SENT:
	case MAILSTREAM_LOG_TYPE_DATA_SENT_PRIVATE:
		s->cmd_t0 = mono_ms();
		s->cmd_bytes = 0;
		break;
	case MAILSTREAM_LOG_TYPE_DATA_RECEIVED:
		s->cmd_bytes += (int64_t)size;
		now = mono_ms();
		if (!s->too_slow && s->cmd_t0 &&
		    now - s->cmd_t0 > s->timeout_ms + s->cmd_bytes * 1000 / MIN_RATE) {
			s->too_slow = true;
			log_debug(LOGC_IMAP, "%s: %lld bytes in %lld ms: too slow, giving up",
				  s->label, (long long)s->cmd_bytes, (long long)(now - s->cmd_t0));
			mailstream_cancel(m->imap_stream);
		}
		break;
	default:
		break;
	}
	if (log_debug_on(LOGC_IMAP))
		trace(s, type, str, size);
}

static void trace(struct imap *s, int type, const char *str, size_t size)
{
	char shown[161];
	const char *dir;

	switch (type) {
	case MAILSTREAM_LOG_TYPE_DATA_SENT_PRIVATE:
		log_debug(LOGC_IMAP, "%s: C: <%zu bytes of credentials, not shown>", s->label, size);
		return;
	case MAILSTREAM_LOG_TYPE_DATA_SENT:
		if (mentions_login(str, size)) {
			log_debug(LOGC_IMAP, "%s: C: <LOGIN, not shown>", s->label);
			return;
		}
		dir = "C";
		break;
	case MAILSTREAM_LOG_TYPE_DATA_RECEIVED:
		dir = "S";
		break;
	default:
		return;
	}
	while (size > 0 && (str[size - 1] == '\n' || str[size - 1] == '\r'))
		size--;
	if (trace_copy(shown, sizeof shown, str, size) < size)
		log_debug(LOGC_IMAP, "%s: %s: %s... (%zu bytes)", s->label, dir, shown, size);
	else
		log_debug(LOGC_IMAP, "%s: %s: %s", s->label, dir, shown);
}

/* ---- FETCH items ---- */

/* What one FETCH response carried. */
struct item {
	bool has_uid, has_flags, has_size, has_date;
	uint32_t uid;
	int64_t size, date;
	uint64_t modseq;
	int nbody;		/* BODY[...] sections */
	bool body_whole;	/* ...and all of them BODY[] (no section, no origin) */
	const char *sec_data;	/* a section that came inline (not through the body */
	size_t sec_len;		/* handler): a quoted string */
};

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* INTERNALDATE to epoch seconds UTC.  libetpan keeps the zone as the decimal
 * value of its digits with the sign: "-0530" is -530. */
static int64_t date_epoch(const struct mailimap_date_time *d)
{
	int z, zh, zm;
	int64_t t;

	if (!d || d->dt_year < 1900 || d->dt_year > 9999 || d->dt_month < 1 || d->dt_month > 12 ||
	    d->dt_day < 1 || d->dt_day > 31 || d->dt_hour < 0 || d->dt_hour > 23 ||
	    d->dt_min < 0 || d->dt_min > 59 || d->dt_sec < 0 || d->dt_sec > 60)
		return -1;
	z = d->dt_zone < 0 ? -d->dt_zone : d->dt_zone;
	zh = z / 100;
	zm = z % 100;
	if (zh > 23 || zm > 59)
		return -1;
	t = days_from_civil(d->dt_year, d->dt_month, d->dt_day) * 86400 +
	    d->dt_hour * 3600 + d->dt_min * 60 + d->dt_sec;
	return d->dt_zone < 0 ? t + zh * 3600 + zm * 60 : t - zh * 3600 - zm * 60;
}

/* An IMAP atom (RFC 3501 ATOM-CHAR without "]"): what a flag name may be. */
static bool flag_name_ok(const char *f)
{
	if (!f || !*f)
		return false;
	for (; *f; f++)
		if ((unsigned char)*f <= 0x20 || (unsigned char)*f >= 0x7f || strchr("(){%*\"\\]", *f))
			return false;
	return true;
}

static void flag_add(struct buf *b, const char *prefix, const char *name)
{
	if (b->len)
		buf_adds(b, " ");
	buf_adds(b, prefix);
	buf_adds(b, name);
}

/* The flags in the order the server sent them; \Recent is session state, not a
 * message property, and is left out. */
static void flags_collect(const struct mailimap_msg_att_dynamic *dyn, struct buf *b)
{
	static const char *const sys[] = {
		[MAILIMAP_FLAG_ANSWERED] = "Answered", [MAILIMAP_FLAG_FLAGGED] = "Flagged",
		[MAILIMAP_FLAG_DELETED] = "Deleted", [MAILIMAP_FLAG_SEEN] = "Seen",
		[MAILIMAP_FLAG_DRAFT] = "Draft",
	};

	if (!dyn || !dyn->att_list)
		return;
	for (clistiter *c = clist_begin(dyn->att_list); c; c = clist_next(c)) {
		const struct mailimap_flag_fetch *ff = clist_content(c);
		const struct mailimap_flag *f = ff ? ff->fl_flag : NULL;

		if (!ff || ff->fl_type != MAILIMAP_FLAG_FETCH_OTHER || !f)
			continue;
		if (f->fl_type >= MAILIMAP_FLAG_ANSWERED && f->fl_type <= MAILIMAP_FLAG_DRAFT)
			flag_add(b, "\\", sys[f->fl_type]);
		else if (f->fl_type == MAILIMAP_FLAG_KEYWORD && flag_name_ok(f->fl_data.fl_keyword))
			flag_add(b, "", f->fl_data.fl_keyword);
		else if (f->fl_type == MAILIMAP_FLAG_EXTENSION && flag_name_ok(f->fl_data.fl_extension))
			flag_add(b, "\\", f->fl_data.fl_extension);
		else
			log_debug(LOGC_IMAP, "ignoring a malformed flag");
	}
}

static bool section_whole(const struct mailimap_msg_att_body_section *sec)
{
	return !sec || ((!sec->sec_section || !sec->sec_section->sec_spec) && sec->sec_origin_octet == 0);
}

static void item_static(const struct mailimap_msg_att_static *st, struct item *it)
{
	switch (st->att_type) {
	case MAILIMAP_MSG_ATT_UID:
		it->has_uid = true;
		it->uid = st->att_data.att_uid;
		break;
	case MAILIMAP_MSG_ATT_RFC822_SIZE:
		it->has_size = true;
		it->size = st->att_data.att_rfc822_size;
		break;
	case MAILIMAP_MSG_ATT_INTERNALDATE:
		it->has_date = true;
		it->date = date_epoch(st->att_data.att_internal_date);
		break;
	case MAILIMAP_MSG_ATT_BODY_SECTION:
		it->body_whole = (it->nbody == 0 || it->body_whole) &&
				 section_whole(st->att_data.att_body_section);
		it->nbody++;
		if (st->att_data.att_body_section && st->att_data.att_body_section->sec_length) {
			it->sec_data = st->att_data.att_body_section->sec_body_part;
			it->sec_len = st->att_data.att_body_section->sec_length;
		}
		break;
	case MAILIMAP_MSG_ATT_RFC822:	/* a body we did not ask for */
		it->nbody++;
		it->body_whole = false;
		break;
	default:
		break;
	}
}

static void item_extension(const struct mailimap_extension_data *x, struct item *it)
{
	if (x && x->ext_extension && x->ext_extension->ext_id == MAILIMAP_EXTENSION_CONDSTORE &&
	    x->ext_type == MAILIMAP_CONDSTORE_TYPE_FETCH_DATA && x->ext_data)
		it->modseq = ((const struct mailimap_condstore_fetch_mod_resp *)x->ext_data)
				     ->cs_modseq_value;
}

static void item_scan(const struct mailimap_msg_att *att, struct item *it, struct buf *flags)
{
	memset(it, 0, sizeof *it);
	it->size = it->date = -1;
	flags->len = 0;
	if (flags->p)
		flags->p[0] = '\0';
	else
		buf_add(flags, "", 0);
	for (clistiter *c = clist_begin(att->att_list); c; c = clist_next(c)) {
		const struct mailimap_msg_att_item *ai = clist_content(c);

		if (ai->att_type == MAILIMAP_MSG_ATT_ITEM_DYNAMIC) {
			it->has_flags = true;
			flags_collect(ai->att_data.att_dyn, flags);
		} else if (ai->att_type == MAILIMAP_MSG_ATT_ITEM_STATIC && ai->att_data.att_static) {
			item_static(ai->att_data.att_static, it);
		} else if (ai->att_type == MAILIMAP_MSG_ATT_ITEM_EXTENSION) {
			item_extension(ai->att_data.att_extension_data, it);
		}
	}
}

static void op_refuse(struct fetch_op *op, const char *fmt, ...) MF_PRINTF(2, 3);
static void op_refuse(struct fetch_op *op, const char *fmt, ...)
{
	va_list ap;

	op->failed = true;
	op->e->kind = ERR_PROTO;
	va_start(ap, fmt);
	vsnprintf(op->e->msg, sizeof op->e->msg, fmt, ap);
	va_end(ap);
}

/* A callback returned non-zero: keep its error if it set one. */
static void op_aborted(struct fetch_op *op, const char *who)
{
	op->failed = true;
	if (op->e->kind == ERR_NONE)
		err_set(op->e, ERR_PROTO, "FETCH aborted by its %s", who);
}

/* ---- UID bookkeeping for body fetches ---- */

static int range_cmp(const void *a, const void *b)
{
	const struct uid_range *x = a, *y = b;

	return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Sorted and merged, so that one binary search answers "was it asked for?". */
static size_t ranges_normalise(struct uid_range *r, size_t n)
{
	size_t k = 0;

	qsort(r, n, sizeof *r, range_cmp);
	for (size_t i = 0; i < n; i++) {
		if (k && r[i].lo <= r[k - 1].hi + (uint64_t)1) {
			if (r[i].hi > r[k - 1].hi)
				r[k - 1].hi = r[i].hi;
		} else {
			r[k++] = r[i];
		}
	}
	return k;
}

static bool ranges_contain(const struct uid_range *r, size_t n, uint32_t uid)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {	/* first range with r.lo > uid */
		size_t mid = lo + (hi - lo) / 2;

		if (r[mid].lo <= uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo > 0 && uid <= r[lo - 1].hi;
}

static size_t seen_slot(const uint32_t *t, size_t cap, uint32_t uid)
{
	size_t i = (uid * 2654435761u) & (cap - 1);

	while (t[i] && t[i] != uid)
		i = (i + 1) & (cap - 1);
	return i;
}

/* Adds uid (never 0) to the set; false when it was there already. */
static bool seen_add(struct fetch_op *op, uint32_t uid)
{
	size_t i;

	if (2 * (op->seen_n + 1) > op->seen_cap) {
		size_t cap = op->seen_cap ? op->seen_cap * 2 : 256;
		uint32_t *t = xcalloc(cap, sizeof *t);

		for (size_t j = 0; j < op->seen_cap; j++)
			if (op->seen[j])
				t[seen_slot(t, cap, op->seen[j])] = op->seen[j];
		free(op->seen);
		op->seen = t;
		op->seen_cap = cap;
	}
	i = seen_slot(op->seen, op->seen_cap, uid);
	if (op->seen[i])
		return false;
	op->seen[i] = uid;
	op->seen_n++;
	return true;
}

/* ---- libetpan handlers ---- */

static void meta_item(struct imap *s, struct fetch_op *op, const struct mailimap_msg_att *att)
{
	struct item it;
	struct imap_msginfo mi;

	item_scan(att, &it, &op->flags);
	if (!it.has_size) {	/* not our reply: a flag update the server volunteered */
		log_debug(LOGC_IMAP, "%s: unsolicited FETCH for message %u ignored", s->label,
			  att->att_number);
		return;
	}
	if (op->kind == FETCH_META && (att->att_number < op->lo || att->att_number > op->hi)) {
		op_refuse(op, "server answered for message %u, outside %u:%u",
			  att->att_number, op->lo, op->hi);
		return;
	}
	if (!it.has_uid || it.uid == 0) {
		op_refuse(op, "server sent no valid UID for message %u", att->att_number);
		return;
	}
	if (op->kind == FETCH_UIDMETA && it.uid < op->lo) {
		/* "lo:*" with no UID >= lo names the highest message (RFC 3501 6.4.8) */
		log_debug(LOGC_IMAP, "%s: UID %u below %u ignored (the answer to %u:*)", s->label,
			  it.uid, op->lo, op->lo);
		return;
	}
	if (!it.has_flags) {
		op_refuse(op, "server sent no FLAGS for UID %u", it.uid);
		return;
	}
	if (!seen_add(op, op->kind == FETCH_META ? att->att_number : it.uid)) {
		op_refuse(op, "server answered twice for message %u", att->att_number);
		return;
	}
	mi = (struct imap_msginfo){ .seq = att->att_number, .uid = it.uid, .flags = op->flags.p,
				    .internaldate = it.has_date ? it.date : -1, .size = it.size,
				    .modseq = it.modseq };
	if (op->cb(&mi, op->ctx) != 0)
		op_aborted(op, "callback");
}

/* Ends the body begun for this item, or explains why it is not ended. */
static void body_finish(struct imap *s, struct fetch_op *op, const struct item *it, uint32_t seq)
{
	struct imap_msginfo mi;

	if (op->bytes == 0 && it->has_size && it->size > 0) {
		/* NIL, or a server that lost the message: not ended, so the caller
		 * sees it missing and asks again later. */
		log_warn("%s: UID %u: server sent an empty body for a %lld-byte message; skipped",
			 s->label, it->uid, (long long)it->size);
		if (op->begun)
			op->sink->abort(op->ctx);
		op->begun = false;
		return;
	}
	if (it->has_size && it->size != op->bytes)
		log_debug(LOGC_IMAP, "%s: UID %u: RFC822.SIZE %lld, body %lld bytes", s->label,
			  it->uid, (long long)it->size, (long long)op->bytes);
	if (!op->begun && op->sink->begin(op->ctx) != 0) {
		op_aborted(op, "sink");
		return;
	}
	op->begun = false;	/* end() owns it now, whatever it returns */
	mi = (struct imap_msginfo){ .seq = seq, .uid = it->uid, .flags = op->flags.p,
				    .internaldate = it->has_date ? it->date : -1,
				    .size = op->bytes, .modseq = it->modseq };
	if (op->sink->end(op->ctx, &mi) != 0) {
		op_aborted(op, "sink");
		return;
	}
	s->stats.bodies++;
}

static void body_item(struct imap *s, struct fetch_op *op, const struct mailimap_msg_att *att)
{
	struct item it;

	item_scan(att, &it, &op->flags);
	if (it.nbody == 0 && !op->begun) {
		log_debug(LOGC_IMAP, "%s: unsolicited FETCH for message %u ignored", s->label,
			  att->att_number);
		return;
	}
	if (it.nbody != 1 || !it.body_whole) {
		op_refuse(op, "server sent %d unexpected body sections for message %u",
			  it.nbody, att->att_number);
		return;
	}
	if (!it.has_uid || it.uid == 0) {
		op_refuse(op, "server sent a body without a valid UID (message %u)",
			  att->att_number);
		return;
	}
	if (!ranges_contain(op->ranges, op->nranges, it.uid)) {
		op_refuse(op, "server sent UID %u, which was not asked for", it.uid);
		return;
	}
	if (!seen_add(op, it.uid)) {
		op_refuse(op, "server sent UID %u twice", it.uid);
		return;
	}
	body_finish(s, op, &it, att->att_number);
	op->bytes = 0;
}

/* A reply to CHANGEDSINCE: UID, FLAGS and MODSEQ of a message in lo:hi.  The
 * same shape as an unsolicited flag update, which is just as true: both are
 * handed out. */
static void changed_item(struct imap *s, struct fetch_op *op, const struct mailimap_msg_att *att)
{
	struct item it;
	struct imap_msginfo mi;

	item_scan(att, &it, &op->flags);
	if (!it.has_uid || !it.has_flags) {	/* no UID: cannot be placed; no FLAGS: nothing new */
		log_debug(LOGC_IMAP, "%s: FETCH for message %u without UID or FLAGS ignored",
			  s->label, att->att_number);
		return;
	}
	if (it.uid == 0 || it.uid < op->lo || it.uid > op->hi) {
		op_refuse(op, "server sent UID %u, which was not asked for (%u:%u)", it.uid, op->lo,
			  op->hi);
		return;
	}
	if (!it.modseq) {
		op_refuse(op, "server sent no MODSEQ for UID %u", it.uid);
		return;
	}
	mi = (struct imap_msginfo){ .seq = att->att_number, .uid = it.uid, .flags = op->flags.p,
				    .internaldate = -1, .size = -1, .modseq = it.modseq };
	if (op->cb(&mi, op->ctx) != 0)
		op_aborted(op, "callback");
}

/* The value of the Message-ID field in a header section ("Message-ID: <x>\r\n"),
 * unfolded; NULL when there is none.  Returns a pointer into b (rewritten). */
static const char *header_message_id(struct buf *b)
{
	char *p = b->p, *v, *o;

	if (!p)
		return NULL;
	for (; *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : p + strlen(p))
		if (!strncasecmp(p, "Message-ID:", 11))
			break;
	if (!*p)
		return NULL;
	for (v = o = p + 11; *v; v++) {	/* unfold: drop CR LF before white space */
		if (*v == '\r' || *v == '\n') {
			if (v[1] == ' ' || v[1] == '\t' || (*v == '\r' && v[1] == '\n' &&
							   (v[2] == ' ' || v[2] == '\t')))
				continue;
			break;
		}
		*o++ = *v;
	}
	*o = '\0';
	p += 11;
	while (*p == ' ' || *p == '\t')
		p++;
	return *p ? p : NULL;
}

static void key_item(struct imap *s, struct fetch_op *op, const struct mailimap_msg_att *att)
{
	struct item it;
	struct imap_msgkey k;

	item_scan(att, &it, &op->flags);
	if (!it.has_size) {
		log_debug(LOGC_IMAP, "%s: unsolicited FETCH for message %u ignored", s->label,
			  att->att_number);
		op->hdr.len = 0;
		return;
	}
	if (!it.has_uid || it.uid == 0 || !ranges_contain(op->ranges, op->nranges, it.uid)) {
		op_refuse(op, "server sent UID %u, which was not asked for", it.uid);
		return;
	}
	if (!seen_add(op, it.uid)) {
		op_refuse(op, "server sent UID %u twice", it.uid);
		return;
	}
	if (it.sec_data && op->hdr.len == 0)
		buf_add(&op->hdr, it.sec_data, it.sec_len > 8192 ? 8192 : it.sec_len);
	k = (struct imap_msgkey){ .uid = it.uid, .size = it.size,
				  .internaldate = it.has_date ? it.date : -1,
				  .message_id = header_message_id(&op->hdr) };
	if (op->kcb(&k, op->ctx) != 0)
		op_aborted(op, "callback");
	op->hdr.len = 0;
	if (op->hdr.p)
		op->hdr.p[0] = '\0';
}

/* Runs once per "* n FETCH" after the whole item is parsed; att is freed
 * when it returns.  Its numbers are checked in the raw text first. */
static void on_msg_att(struct mailimap_msg_att *att, void *ctx)
{
	struct imap *s = ctx;
	struct fetch_op *op = s->op;

	if (!op) {
		s->unsolicited = true;
		return;
	}
	if (op->failed || !att || !att->att_list)
		return;
	if (check_numbers(s, &op->scanned, "FETCH", op->e) < 0) {
		op->failed = true;
		return;
	}
	switch (op->kind) {
	case FETCH_META:
	case FETCH_UIDMETA:
		meta_item(s, op, att);
		break;
	case FETCH_BODIES:
		body_item(s, op, att);
		break;
	case FETCH_CHANGED:
		changed_item(s, op, att);
		break;
	case FETCH_KEYS:
		key_item(s, op, att);
		break;
	}
}

/* Runs with each chunk (<= 64 KiB) of a literal body; false aborts the parse
 * and leaves the stream out of sync, which is what we want after a refusal. */
static bool on_body(int type, struct mailimap_msg_att_body_section *sec, const char *p, size_t n,
		    void *ctx)
{
	struct imap *s = ctx;
	struct fetch_op *op = s->op;

	s->stats.body_bytes += (int64_t)n;
	if (op && op->kind == FETCH_KEYS && !op->failed) {
		/* a header section: kept up to 8 KiB, the Message-ID is near the top */
		if (op->hdr.len < 8192)
			buf_add(&op->hdr, p, n < 8192 - op->hdr.len ? n : 8192 - op->hdr.len);
		return true;
	}
	if (!op || op->kind != FETCH_BODIES)
		return true;	/* a literal nobody asked for: dropped */
	if (op->failed)
		return false;
	if (type != MAILIMAP_MSG_ATT_BODY_SECTION || !section_whole(sec)) {
		op_refuse(op, "server sent a body part that was not asked for");
		return false;
	}
	if (!op->begun) {
		if (op->sink->begin(op->ctx) != 0) {
			op_aborted(op, "sink");
			return false;
		}
		op->begun = true;
	}
	if (n && op->sink->data(op->ctx, p, n) != 0) {
		op_aborted(op, "sink");
		return false;
	}
	op->bytes += (int64_t)n;
	return true;
}

/* Never called for anything useful: its presence is what makes libetpan call
 * on_msg_att instead of collecting every reply in a list. */
static void on_items_progress(size_t cur, size_t max, void *ctx)
{
}

/* ---- connect ---- */

static void sni_cb(struct mailstream_ssl_context *c, void *data)
{
	struct imap *s = data;

	if (s->sni && mailstream_ssl_set_server_name(c, s->host) < 0)
		log_debug(LOGC_IMAP, "%s: could not set SNI", s->label);
}

/* Dead peers otherwise go unnoticed for the whole IDLE period. */
static void set_keepalive(struct imap *s)
{
	int fd = mailstream_low_get_fd(mailstream_get_low(s->m->imap_stream));
	int on = 1, idle = 60, intvl = 15, cnt = 4;

	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt) < 0)
		log_debug(LOGC_IMAP, "%s: could not set TCP keepalive", s->label);
}

static int verify(struct imap *s, const char *ca_file, struct err *e)
{
	if (tls_verify_stream(s->m->imap_stream, s->host, ca_file, e) < 0) {
		s->dead = true;	/* not one more byte to this server */
		return -1;
	}
	log_debug(LOGC_IMAP, "%s: certificate of %s verified", s->label, s->host);
	return 0;
}

static void caps_forget(struct imap *s)
{
	struct mailimap_connection_info *ci = s->m->imap_connection_info;

	if (ci && ci->imap_capability) {
		mailimap_capability_data_free(ci->imap_capability);
		ci->imap_capability = NULL;
	}
}

/* Issues CAPABILITY unless the server announced them in its last response. */
static int caps_ensure(struct imap *s, struct err *e)
{
	struct mailimap_capability_data *cd = NULL;
	int r;

	if (s->m->imap_connection_info && s->m->imap_connection_info->imap_capability)
		return 0;
	r = mailimap_capability(s->m, &cd);
	if (r != MAILIMAP_NO_ERROR)
		return fail(s, r, ERR_PROTO, "CAPABILITY", e);
	mailimap_capability_data_free(cd);	/* a copy; the session keeps its own */
	return 0;
}

static void caps_record(struct imap *s)
{
	s->caps = 0;
	if (mailimap_has_condstore(s->m))
		s->caps |= IMAP_CAP_CONDSTORE;
	if (mailimap_has_qresync(s->m))
		s->caps |= IMAP_CAP_QRESYNC;
	if (mailimap_has_idle(s->m))
		s->caps |= IMAP_CAP_IDLE;
	if (mailimap_has_uidplus(s->m))
		s->caps |= IMAP_CAP_UIDPLUS;
	if (mailimap_has_extension(s->m, "ENABLE"))
		s->caps |= IMAP_CAP_ENABLE;
}

/* Plain connection, CAPABILITY, STARTTLS, verification, CAPABILITY again.
 * Never falls back to plaintext. */
static int open_starttls(struct imap *s, const char *ca_file, struct err *e)
{
	int r = mailimap_socket_connect(s->m, s->host, (uint16_t)s->port);
	char text[256];

	if (r > MAILIMAP_NO_ERROR_NON_AUTHENTICATED)
		return fail(s, r, ERR_NET, "connect", e);
	set_keepalive(s);
	if (r == MAILIMAP_NO_ERROR_AUTHENTICATED) {	/* STARTTLS is impossible after PREAUTH */
		s->dead = true;
		return err_set(e, ERR_TLS, "%s greeted with PREAUTH in plaintext; refusing to "
			       "continue without TLS", s->host);
	}
	caps_forget(s);		/* greeting capabilities are not worth a round trip's doubt */
	if (caps_ensure(s, e) < 0)
		return -1;
	if (!mailimap_has_extension(s->m, "STARTTLS")) {
		s->dead = true;
		return err_set(e, ERR_TLS, "%s does not offer STARTTLS", s->host);
	}
	r = mailimap_socket_starttls_with_callback(s->m, sni_cb, s);
	if (r == MAILIMAP_ERROR_STARTTLS) {	/* tagged NO, or data injected after OK */
		s->dead = true;
		server_text(s, text, sizeof text);
		return err_set(e, ERR_TLS, "STARTTLS refused by %s: %s", s->host, text);
	}
	if (r == MAILIMAP_ERROR_STREAM) {
		s->dead = true;
		return err_set(e, ERR_NET, "STARTTLS with %s:%d: TLS handshake failed or connection "
			       "lost", s->host, s->port);
	}
	if (r != MAILIMAP_NO_ERROR)
		return fail(s, r, ERR_TLS, "STARTTLS", e);
	if (verify(s, ca_file, e) < 0)
		return -1;
	caps_forget(s);		/* anything said before TLS is void */
	return caps_ensure(s, e);
}

static int open_session(struct imap *s, const struct imap_opts *o, struct err *e)
{
	int r;

	switch (o->tls) {
	case TLS_IMPLICIT:
		r = mailimap_ssl_connect_with_callback(s->m, s->host, (uint16_t)s->port, sni_cb, s);
		if (r > MAILIMAP_NO_ERROR_NON_AUTHENTICATED)
			return fail(s, r, ERR_NET, "connect", e);
		s->preauth = r == MAILIMAP_NO_ERROR_AUTHENTICATED;
		set_keepalive(s);
		return verify(s, o->ca_file, e) < 0 ? -1 : caps_ensure(s, e);
	case TLS_STARTTLS:
		return open_starttls(s, o->ca_file, e);
	case TLS_NONE:
		r = mailimap_socket_connect(s->m, s->host, (uint16_t)s->port);
		if (r > MAILIMAP_NO_ERROR_NON_AUTHENTICATED)
			return fail(s, r, ERR_NET, "connect", e);
		s->preauth = r == MAILIMAP_NO_ERROR_AUTHENTICATED;
		set_keepalive(s);
		return caps_ensure(s, e);
	}
	return err_set(e, ERR_CONFIG, "unknown TLS mode %d", (int)o->tls);
}

static int login(struct imap *s, const struct imap_opts *o, struct err *e)
{
	char text[256];
	int r;

	if (s->preauth) {
		log_info("%s: %s authenticated us in its greeting (PREAUTH)", s->label, s->host);
		return 0;
	}
	if (mailimap_has_extension(s->m, "LOGINDISABLED"))
		return err_set(e, ERR_AUTH, "%s does not allow LOGIN (LOGINDISABLED)", s->host);
	caps_forget(s);		/* so that we can tell whether the OK announces new ones */
	r = mailimap_login(s->m, o->user, o->password);
	s->stats.commands = s->m->imap_tag;
	if (r == MAILIMAP_ERROR_LOGIN) {
		server_text(s, text, sizeof text);
		/* RFC 5530: UNAVAILABLE is a temporary failure, anything else needs the user. */
		return err_set(e, strstr(text, "[UNAVAILABLE]") ? ERR_NET : ERR_AUTH,
			       "LOGIN as %s refused by %s: %s", o->user, s->host,
			       text[0] ? text : "no reason given");
	}
	if (r != MAILIMAP_NO_ERROR)
		return fail(s, r, ERR_AUTH, "LOGIN", e);
	return 0;
}

/* ENABLE QRESYNC (RFC 7162 3.2.3): without it there is no VANISHED.  A refusal
 * is not an error: the session falls back to CONDSTORE. */
static int enable_qresync(struct imap *s, struct err *e)
{
	struct mailimap_capability_data *want, *got = NULL;
	clist *l;
	int r;

	if (!(s->caps & IMAP_CAP_QRESYNC))
		return 0;
	l = clist_new();
	clist_append(l, mailimap_capability_new(MAILIMAP_CAPABILITY_NAME, NULL, xstrdup("QRESYNC")));
	want = mailimap_capability_data_new(l);
	r = mailimap_enable(s->m, want, &got);
	mailimap_capability_data_free(want);
	s->stats.commands = s->m->imap_tag;
	if (r != MAILIMAP_NO_ERROR) {
		if (got)
			mailimap_capability_data_free(got);
		if (fail(s, r, ERR_FOLDER, "ENABLE QRESYNC", e) < 0 && e->kind != ERR_FOLDER)
			return -1;
		log_info("%s: %s; using CONDSTORE", s->label, e->msg);	/* a tagged NO or BAD */
		err_clear(e);
		return 0;
	}
	for (clistiter *c = got ? clist_begin(got->cap_list) : NULL; c; c = clist_next(c)) {
		const struct mailimap_capability *cap = clist_content(c);

		if (cap->cap_type == MAILIMAP_CAPABILITY_NAME && cap->cap_data.cap_name &&
		    !strcasecmp(cap->cap_data.cap_name, "QRESYNC"))
			s->caps |= IMAP_CAP_QRESYNC_ON;
	}
	if (got)
		mailimap_capability_data_free(got);
	return 0;
}

static struct imap *session_new(const struct imap_opts *o)
{
	struct imap *s = xcalloc(1, sizeof *s);

	s->m = mailimap_new(0, NULL);
	if (!s->m) {
		free(s);
		return NULL;
	}
	s->host = xstrdup(o->host);
	s->port = o->port;
	s->sni = !tls_host_is_address(o->host);
	snprintf(s->label, sizeof s->label, "%s", o->label ? o->label : o->host);
	/* Copied into the stream at connect time only (LIBETPAN.md section 5). */
	mailimap_set_timeout(s->m, o->timeout > 0 ? o->timeout : 60);
	s->timeout_ms = (o->timeout > 0 ? o->timeout : 60) * 1000LL;
	mailimap_set_msg_att_handler(s->m, on_msg_att, s);
	mailimap_set_msg_body_handler(s->m, on_body, s);
	mailimap_set_progress_callback(s->m, NULL, on_items_progress, s);
	mailimap_set_logger(s->m, io_watch, s);
	return s;
}

int imap_connect(const struct imap_opts *o, struct imap **s_r, struct err *e)
{
	struct imap *s;

	*s_r = NULL;
	err_clear(e);
	/* a second line of defence behind the configuration check: `imap_tls = none`
	 * must never carry a password over a real network */
	if (o->tls == TLS_NONE && !conf_host_is_loopback(o->host))
		return err_set(e, ERR_CONFIG, "refusing IMAP without TLS to %s (not a loopback "
			       "address)", o->host);
	if (o->port <= 0 || o->port > 65535)
		return err_set(e, ERR_CONFIG, "invalid IMAP port %d", o->port);
	s = session_new(o);
	if (!s)
		return err_set(e, ERR_LOCAL, "mailimap_new failed");
	if (open_session(s, o, e) < 0 || login(s, o, e) < 0 || caps_ensure(s, e) < 0) {
		imap_close(&s);
		return -1;
	}
	caps_record(s);
	if (enable_qresync(s, e) < 0) {
		imap_close(&s);
		return -1;
	}
	s->stats.commands = s->m->imap_tag;
	log_debug(LOGC_IMAP, "%s: logged in to %s:%d, capabilities 0x%x", s->label, s->host,
		  s->port, s->caps);
	*s_r = s;
	return 0;
}

void imap_close(struct imap **sp)
{
	struct imap *s = *sp;

	if (!s)
		return;
	*sp = NULL;
	if (s->m->imap_stream) {
		if (s->dead) {
			/* LIBETPAN.md section 5: mailimap_free() would send LOGOUT
			 * and wait for an answer that may never come. */
			mailstream_close(s->m->imap_stream);
			s->m->imap_stream = NULL;
		} else {
			mailimap_logout(s->m);	/* closes the stream in any case */
		}
	}
	mailimap_free(s->m);
	free(s->host);
	free(s->sel_name);
	free(s);
}

/* ---- LIST ---- */

static unsigned mbx_flags(const struct mailimap_mbx_list_flags *f)
{
	unsigned flags = 0;

	if (!f)
		return 0;
	if (f->mbf_type == MAILIMAP_MBX_LIST_FLAGS_SFLAG &&
	    f->mbf_sflag == MAILIMAP_MBX_LIST_SFLAG_NOSELECT)
		flags |= IMAP_MBX_NOSELECT;
	for (clistiter *c = clist_begin(f->mbf_oflags); c; c = clist_next(c)) {
		const struct mailimap_mbx_list_oflag *of = clist_content(c);

		if (of->of_type != MAILIMAP_MBX_LIST_OFLAG_FLAG_EXT || !of->of_flag_ext)
			continue;
		if (!strcasecmp(of->of_flag_ext, "Noselect"))
			flags |= IMAP_MBX_NOSELECT;
		else if (!strcasecmp(of->of_flag_ext, "NonExistent"))
			flags |= IMAP_MBX_NONEXISTENT;
	}
	return flags;
}

int imap_list(struct imap *s, struct imap_mailbox **m_r, size_t *n_r, struct err *e)
{
	clist *l = NULL;
	struct imap_mailbox *mb;
	size_t n = 0;
	int r;

	*m_r = NULL;
	*n_r = 0;
	if (check_alive(s, e) < 0)
		return -1;
	r = mailimap_list(s->m, "", "*", &l);
	if (r != MAILIMAP_NO_ERROR) {
		/* On a tagged NO libetpan hands over the list all the same. */
		if (r == MAILIMAP_ERROR_LIST && l)
			mailimap_list_result_free(l);
		fail(s, r, ERR_NET, "LIST", e);
		s->dead = true;	/* ERR_NET means "reconnect later" */
		return -1;
	}
	s->stats.commands = s->m->imap_tag;
	mb = xcalloc(clist_count(l) + 1, sizeof *mb);
	for (clistiter *c = clist_begin(l); c; c = clist_next(c)) {
		const struct mailimap_mailbox_list *ml = clist_content(c);

		if (!ml || !ml->mb_name)
			continue;
		mb[n].name = xstrdup(ml->mb_name);
		mb[n].delim = ml->mb_delimiter;
		mb[n].flags = mbx_flags(ml->mb_flag);
		n++;
	}
	mailimap_list_result_free(l);
	*m_r = mb;
	*n_r = n;
	return 0;
}

void imap_mailboxes_free(struct imap_mailbox *m, size_t n)
{
	for (size_t i = 0; m && i < n; i++)
		free(m[i].name);
	free(m);
}

/* ---- EXAMINE ---- */

int imap_examine(struct imap *s, const char *name, struct imap_selected *sel_r, struct err *e)
{
	const struct mailimap_selection_info *si;
	uint64_t hms = 0;
	int r;

	memset(sel_r, 0, sizeof *sel_r);
	if (check_alive(s, e) < 0)
		return -1;
	s->selected = false;
	free(s->sel_name);
	s->sel_name = NULL;
	if (s->caps & IMAP_CAP_CONDSTORE)
		r = mailimap_examine_condstore(s->m, name, &hms);
	else
		r = mailimap_examine(s->m, name);
	if (r != MAILIMAP_NO_ERROR)
		return fail(s, r, ERR_FOLDER, "EXAMINE", e);
	s->stats.commands = s->m->imap_tag;
	if (check_numbers(s, &(size_t){ 0 }, "EXAMINE", e) < 0)
		return -1;
	si = s->m->imap_selection_info;
	if (!si || !si->sel_uidvalidity)
		return err_set(e, ERR_FOLDER, "EXAMINE: server sent no UIDVALIDITY");
	if (!si->sel_has_exists)
		return err_set(e, ERR_FOLDER, "EXAMINE: server sent no EXISTS");
	sel_r->uidvalidity = si->sel_uidvalidity;
	sel_r->uidnext = si->sel_uidnext;
	sel_r->exists = si->sel_exists;
	sel_r->highestmodseq = hms;
	s->selected = true;
	s->sel_name = xstrdup(name);
	s->exists = s->lib_exists = si->sel_exists;
	return 0;
}

/* ---- APPEND ---- */

static int append_once(struct imap *s, const char *name, const char *msg, size_t len, bool *retry,
		       struct err *e)
{
	struct mailimap_flag_list *fl = mailimap_flag_list_new_empty();
	int r;

	*retry = false;
	mailimap_flag_list_add(fl, mailimap_flag_new_seen());
	r = mailimap_append(s->m, name, fl, NULL, msg, len);
	mailimap_flag_list_free(fl);
	s->stats.commands = s->m->imap_tag;
	if (r == MAILIMAP_NO_ERROR)
		return 0;
	*retry = r == MAILIMAP_ERROR_APPEND && s->m->imap_response_info &&
		 s->m->imap_response_info->rsp_trycreate;
	return fail(s, r, ERR_FOLDER, "APPEND", e);
}

int imap_append(struct imap *s, const char *name, const char *msg, size_t len, struct err *e)
{
	bool retry;
	int r;

	if (check_alive(s, e) < 0)
		return -1;
	if (append_once(s, name, msg, len, &retry, e) == 0)
		return 0;
	if (!retry)
		return -1;
	r = mailimap_create(s->m, name);
	if (r != MAILIMAP_NO_ERROR)
		return fail(s, r, ERR_FOLDER, "CREATE", e);
	err_clear(e);
	return append_once(s, name, msg, len, &retry, e);
}

/* ---- FETCH ---- */

static struct mailimap_fetch_type *fetch_type_new(const struct imap *s, bool bodies)
{
	struct mailimap_fetch_type *ft = mailimap_fetch_type_new_fetch_att_list_empty();

	mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_uid());
	mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_flags());
	if (bodies)
		mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_internaldate());
	mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_rfc822_size());
	if (s->caps & IMAP_CAP_CONDSTORE)
		mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_modseq());
	if (bodies)
		mailimap_fetch_type_new_fetch_att_list_add(
			ft, mailimap_fetch_att_new_body_peek_section(mailimap_section_new(NULL)));
	return ft;
}

/* Common end of both fetches: the op's verdict first (it knows more than the
 * return code), then the return code. */
static int fetch_finish(struct imap *s, struct fetch_op *op, int r, clist *list, const char *what,
			struct err *e)
{
	if (r == MAILIMAP_NO_ERROR && list)	/* with a handler: empty, but allocated */
		mailimap_fetch_list_free(list);
	if (op->begun) {
		op->sink->abort(op->ctx);
		op->begun = false;
	}
	s->op = NULL;
	buf_free(&op->flags);
	buf_free(&op->hdr);
	free(op->seen);
	free(op->ranges);
	s->stats.commands = s->m->imap_tag;
	if (op->failed) {
		s->dead = true;
		return -1;
	}
	if (r != MAILIMAP_NO_ERROR)
		return fail(s, r, ERR_FOLDER, what, e);
	if (check_numbers(s, &op->scanned, what, e) < 0 || exists_check(s, what, e) < 0)
		return -1;
	/* A message missing from the remote view would look deleted on the
	 * server: an incomplete answer must not pass for a complete one. */
	if (op->kind == FETCH_META && op->seen_n != (size_t)op->hi - op->lo + 1)
		return err_set(e, ERR_FOLDER, "FETCH %u:%u: server answered for %zu of %u messages",
			       op->lo, op->hi, op->seen_n, op->hi - op->lo + 1);
	return 0;
}

/* Sends a FETCH (by UID when UID) of FT over SET with OP installed, frees both
 * and finishes it. */
static int fetch_run(struct imap *s, struct fetch_op *op, bool uid, struct mailimap_set *set,
		     struct mailimap_fetch_type *ft, const char *what, struct err *e)
{
	clist *list = NULL;
	int r;

	s->op = op;
	r = uid ? mailimap_uid_fetch(s->m, set, ft, &list) : mailimap_fetch(s->m, set, ft, &list);
	mailimap_fetch_type_free(ft);
	mailimap_set_free(set);
	return fetch_finish(s, op, r, list, what, e);
}

static int fetch_check(const struct imap *s, struct err *e)
{
	if (check_alive(s, e) < 0)
		return -1;
	if (!s->selected)
		return err_set(e, ERR_FOLDER, "FETCH without a selected folder");
	return 0;
}

int imap_fetch_meta(struct imap *s, uint32_t seq_lo, uint32_t seq_hi, imap_meta_cb *cb, void *ctx,
		    struct err *e)
{
	struct fetch_op op = { .kind = FETCH_META, .e = e, .lo = seq_lo, .hi = seq_hi,
			       .cb = cb, .ctx = ctx };
	struct mailimap_set *set;
	struct mailimap_fetch_type *ft;

	err_clear(e);
	if (fetch_check(s, e) < 0)
		return -1;
	if (seq_lo == 0 || seq_hi < seq_lo)
		return err_set(e, ERR_FOLDER, "invalid sequence range %u:%u", seq_lo, seq_hi);
	set = mailimap_set_new_interval(seq_lo, seq_hi);
	ft = fetch_type_new(s, false);
	return fetch_run(s, &op, false, set, ft, "FETCH", e);
}

/* The UID set of a UID FETCH over RANGES, after checking them; OP keeps a
 * normalised copy to check the server's answers against.  NULL: a bad range. */
static struct mailimap_set *uid_set_new(struct fetch_op *op, const struct uid_range *ranges,
					size_t nranges, struct err *e)
{
	struct mailimap_set *set;

	for (size_t i = 0; i < nranges; i++)
		if (ranges[i].lo == 0 || ranges[i].hi < ranges[i].lo) {
			err_set(e, ERR_FOLDER, "invalid UID range %u:%u", ranges[i].lo,
				ranges[i].hi);
			return NULL;
		}
	set = mailimap_set_new_empty();
	for (size_t i = 0; i < nranges; i++)
		mailimap_set_add_interval(set, ranges[i].lo, ranges[i].hi);
	op->ranges = xmalloc(nranges * sizeof *op->ranges);
	memcpy(op->ranges, ranges, nranges * sizeof *op->ranges);
	op->nranges = ranges_normalise(op->ranges, nranges);
	return set;
}

int imap_fetch_bodies(struct imap *s, const struct uid_range *ranges, size_t nranges,
		      const struct imap_body_sink *sink, void *ctx, struct err *e)
{
	struct fetch_op op = { .kind = FETCH_BODIES, .e = e, .sink = sink, .ctx = ctx };
	struct mailimap_set *set;
	struct mailimap_fetch_type *ft;

	err_clear(e);
	if (fetch_check(s, e) < 0)
		return -1;
	if (nranges == 0)
		return 0;
	if (!(set = uid_set_new(&op, ranges, nranges, e)))
		return -1;
	ft = fetch_type_new(s, true);
	return fetch_run(s, &op, true, set, ft, "UID FETCH", e);
}

void uid_ranges_format(const struct uid_range *r, size_t n, struct buf *out)
{
	for (size_t i = 0; i < n; i++) {
		if (i)
			buf_adds(out, ",");
		if (r[i].lo == r[i].hi)
			buf_addf(out, "%u", r[i].lo);
		else
			buf_addf(out, "%u:%u", r[i].lo, r[i].hi);
	}
	if (!out->p)
		buf_add(out, "", 0);
}

/* ---- STATUS ---- */

static void status_item(const struct mailimap_status_info *si, struct imap_status *st)
{
	const struct mailimap_extension_data *x = si->st_ext_data;

	switch (si->st_att) {
	case MAILIMAP_STATUS_ATT_UIDVALIDITY:
		st->uidvalidity = si->st_value;
		st->have |= IMAP_ST_UIDVALIDITY;
		break;
	case MAILIMAP_STATUS_ATT_UIDNEXT:
		st->uidnext = si->st_value;
		st->have |= IMAP_ST_UIDNEXT;
		break;
	case MAILIMAP_STATUS_ATT_MESSAGES:
		st->messages = si->st_value;
		st->have |= IMAP_ST_MESSAGES;
		break;
	case MAILIMAP_STATUS_ATT_EXTENSION:	/* HIGHESTMODSEQ comes back this way (LIBETPAN.md 2) */
		if (x && x->ext_extension && x->ext_extension->ext_id == MAILIMAP_EXTENSION_CONDSTORE &&
		    x->ext_type == MAILIMAP_CONDSTORE_TYPE_STATUS_INFO && x->ext_data) {
			st->highestmodseq = ((const struct mailimap_condstore_status_info *)x->ext_data)
						    ->cs_highestmodseq_value;
			st->have |= IMAP_ST_HIGHESTMODSEQ;
		}
		break;
	default:
		break;
	}
}

int imap_status(struct imap *s, const char *name, struct imap_status *st_r, struct err *e)
{
	struct mailimap_status_att_list *al;
	struct mailimap_mailbox_data_status *st = NULL;
	int r;

	memset(st_r, 0, sizeof *st_r);
	err_clear(e);
	if (check_alive(s, e) < 0)
		return -1;
	/* RFC 3501 6.3.10: STATUS of the selected mailbox may be stale (Dovecot
	 * answers [CLIENTBUG] with the session's old view: a push pass of the
	 * folder the last pass left selected saw no change).  Ask nothing. */
	if (s->selected && s->sel_name && !strcmp(s->sel_name, name))
		return 0;
	al = mailimap_status_att_list_new_empty();
	mailimap_status_att_list_add(al, MAILIMAP_STATUS_ATT_UIDVALIDITY);
	mailimap_status_att_list_add(al, MAILIMAP_STATUS_ATT_UIDNEXT);
	mailimap_status_att_list_add(al, MAILIMAP_STATUS_ATT_MESSAGES);
	if (s->caps & IMAP_CAP_CONDSTORE)
		mailimap_status_att_list_add(al, MAILIMAP_STATUS_ATT_HIGHESTMODSEQ);
	r = mailimap_status(s->m, name, al, &st);
	mailimap_status_att_list_free(al);
	s->stats.commands = s->m->imap_tag;
	if (r != MAILIMAP_NO_ERROR)
		return fail(s, r, ERR_FOLDER, "STATUS", e);
	if (check_numbers(s, &(size_t){ 0 }, "STATUS", e) < 0 || exists_check(s, "STATUS", e) < 0) {
		mailimap_mailbox_data_status_free(st);
		return -1;
	}
	for (clistiter *c = st ? clist_begin(st->st_info_list) : NULL; c; c = clist_next(c))
		if (clist_content(c))
			status_item(clist_content(c), st_r);
	if (st)
		mailimap_mailbox_data_status_free(st);
	return 0;
}

/* ---- incremental FETCHes ---- */

int imap_fetch_uid_meta(struct imap *s, uint32_t lo, imap_meta_cb *cb, void *ctx, struct err *e)
{
	struct fetch_op op = { .kind = FETCH_UIDMETA, .e = e, .lo = lo, .cb = cb, .ctx = ctx };
	struct mailimap_set *set;
	struct mailimap_fetch_type *ft;

	err_clear(e);
	if (fetch_check(s, e) < 0)
		return -1;
	if (lo == 0)
		return err_set(e, ERR_FOLDER, "invalid UID range 0:*");
	set = mailimap_set_new_interval(lo, 0);	/* 0 = "*" */
	ft = fetch_type_new(s, false);
	return fetch_run(s, &op, true, set, ft, "UID FETCH", e);
}

/* Hands the VANISHED ranges of the last response to vcb, clipped to lo:hi (an
 * unsolicited VANISHED may name UIDs we did not ask about; they do not concern
 * the caller).  VAN is the one libetpan took out of the list. */
static int vanished_deliver(struct imap *s, const struct mailimap_qresync_vanished *van,
			    uint32_t lo, uint32_t hi, imap_vanished_cb *vcb, void *ctx, struct err *e)
{
	const struct mailimap_response_info *ri = s->m->imap_response_info;
	const struct mailimap_qresync_vanished *v = van;
	clistiter *c = ri ? clist_begin(ri->rsp_extension_list) : NULL;

	for (;;) {
		for (clistiter *k = v && v->qr_known_uids ? clist_begin(v->qr_known_uids->set_list)
							   : NULL; k; k = clist_next(k)) {
			const struct mailimap_set_item *it = clist_content(k);
			uint32_t a = it->set_first, b = it->set_last;

			if (a == 0 || b == 0)	/* "*" is not allowed in known-uids */
				return err_set(e, ERR_PROTO, "VANISHED with \"*\" or UID 0");
			if (a > b) {
				uint32_t t = a;
				a = b;
				b = t;
			}
			if (b < lo || a > hi)
				continue;
			if (vcb(a < lo ? lo : a, b > hi ? hi : b, ctx) != 0) {
				if (e->kind == ERR_NONE)
					err_set(e, ERR_PROTO, "VANISHED aborted by its callback");
				return -1;
			}
		}
		/* the others libetpan left in the response (it hands out only the first) */
		for (v = NULL; c && !v; c = clist_next(c)) {
			const struct mailimap_extension_data *x = clist_content(c);

			if (x && x->ext_extension && x->ext_extension->ext_id == MAILIMAP_EXTENSION_QRESYNC &&
			    x->ext_type == MAILIMAP_QRESYNC_TYPE_VANISHED && x->ext_data)
				v = x->ext_data;
		}
		if (!v)
			return 0;
	}
}

int imap_fetch_changed(struct imap *s, uint32_t lo, uint32_t hi, uint64_t since, imap_meta_cb *cb,
		       imap_vanished_cb *vcb, void *ctx, struct err *e)
{
	struct fetch_op op = { .kind = FETCH_CHANGED, .e = e, .lo = lo, .hi = hi, .cb = cb,
			       .ctx = ctx };
	struct mailimap_qresync_vanished *van = NULL;
	struct mailimap_set *set;
	struct mailimap_fetch_type *ft;
	clist *list = NULL;
	bool qresync = s->caps & IMAP_CAP_QRESYNC_ON;
	int r;

	err_clear(e);
	if (fetch_check(s, e) < 0)
		return -1;
	if (!(s->caps & IMAP_CAP_CONDSTORE) || since == 0)
		return err_set(e, ERR_FOLDER, "CHANGEDSINCE without CONDSTORE or without a MODSEQ");
	if (lo == 0 || hi < lo)
		return err_set(e, ERR_FOLDER, "invalid UID range %u:%u", lo, hi);
	set = mailimap_set_new_interval(lo, hi);
	ft = mailimap_fetch_type_new_fetch_att_list_empty();
	mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_uid());
	mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_flags());
	mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_modseq());
	s->op = &op;
	/* libetpan frees list and van itself on a tagged NO: only touched on success */
	if (qresync)
		r = mailimap_uid_fetch_qresync(s->m, set, ft, since, &list, &van);
	else
		r = mailimap_uid_fetch_changedsince(s->m, set, ft, since, &list);
	mailimap_fetch_type_free(ft);
	mailimap_set_free(set);
	if (r != MAILIMAP_NO_ERROR)
		van = NULL;	/* freed by libetpan, or never set */
	if (fetch_finish(s, &op, r, list, "UID FETCH CHANGEDSINCE", e) < 0) {
		if (van)
			mailimap_qresync_vanished_free(van);
		return -1;
	}
	r = qresync ? vanished_deliver(s, van, lo, hi, vcb, ctx, e) : 0;
	if (van)
		mailimap_qresync_vanished_free(van);
	if (r < 0 && e->kind == ERR_PROTO)
		s->dead = true;
	return r;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

int imap_uid_search(struct imap *s, uint32_t lo, uint32_t hi, uint32_t **uids_r, size_t *n_r,
		    struct err *e)
{
	struct mailimap_search_key *key;
	clist *res = NULL;
	uint32_t *v;
	size_t n = 0;
	int r;

	*uids_r = NULL;
	*n_r = 0;
	err_clear(e);
	if (fetch_check(s, e) < 0)
		return -1;
	if (lo == 0 || hi < lo)
		return err_set(e, ERR_FOLDER, "invalid UID range %u:%u", lo, hi);
	key = mailimap_search_key_new_uid(mailimap_set_new_interval(lo, hi));
	r = mailimap_uid_search(s->m, NULL, key, &res);
	mailimap_search_key_free(key);
	s->stats.commands = s->m->imap_tag;
	if (r != MAILIMAP_NO_ERROR)	/* res is the library's (freed) on a NO */
		return fail(s, r, ERR_FOLDER, "UID SEARCH", e);
	if (check_numbers(s, &(size_t){ 0 }, "UID SEARCH", e) < 0 ||
	    exists_check(s, "UID SEARCH", e) < 0) {
		mailimap_search_result_free(res);
		return -1;
	}
	v = xmalloc((res ? clist_count(res) : 0) * sizeof *v + 1);
	for (clistiter *c = res ? clist_begin(res) : NULL; c; c = clist_next(c)) {
		uint32_t u = *(const uint32_t *)clist_content(c);

		if (u < lo || u > hi) {
			mailimap_search_result_free(res);
			free(v);
			s->dead = true;
			return err_set(e, ERR_PROTO, "UID SEARCH: server sent UID %u, outside %u:%u", u,
				       lo, hi);
		}
		v[n++] = u;
	}
	if (res)
		mailimap_search_result_free(res);
	qsort(v, n, sizeof *v, cmp_u32);
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (!k || v[i] != v[k - 1])
			v[k++] = v[i];
	*uids_r = v;
	*n_r = k;
	return 0;
}

int imap_fetch_keys(struct imap *s, const struct uid_range *ranges, size_t nranges,
		    imap_key_cb *cb, void *ctx, struct err *e)
{
	struct fetch_op op = { .kind = FETCH_KEYS, .e = e, .kcb = cb, .ctx = ctx };
	struct mailimap_set *set;
	struct mailimap_fetch_type *ft;
	clist *hl;

	err_clear(e);
	if (fetch_check(s, e) < 0)
		return -1;
	if (nranges == 0)
		return 0;
	if (!(set = uid_set_new(&op, ranges, nranges, e)))
		return -1;
	hl = clist_new();
	clist_append(hl, xstrdup("MESSAGE-ID"));
	ft = mailimap_fetch_type_new_fetch_att_list_empty();
	mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_uid());
	mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_rfc822_size());
	mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_internaldate());
	mailimap_fetch_type_new_fetch_att_list_add(
		ft, mailimap_fetch_att_new_body_peek_section(
			    mailimap_section_new_header_fields(mailimap_header_list_new(hl))));
	return fetch_run(s, &op, true, set, ft, "UID FETCH (Message-ID)", e);
}

/* ---- IDLE ---- */

/* A line that ends with a literal announcement "{n}" or "{n+}": n, else -1. */
static long line_literal(const char *line)
{
	size_t n = strlen(line);
	long v = 0, mul = 1;

	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--;
	if (n < 3 || line[n - 1] != '}')
		return -1;
	n--;
	if (line[n - 1] == '+')
		n--;
	for (; n > 0 && line[n - 1] >= '0' && line[n - 1] <= '9' && mul <= 100000000; n--, mul *= 10)
		v += (line[n - 1] - '0') * mul;
	return n > 0 && line[n - 1] == '{' ? v : -1;
}

/* Reads and drops n bytes of a literal (bounded by the caller). */
static int skip_literal(struct imap *s, long n, struct err *e)
{
	char buf[4096];

	while (n > 0) {
		ssize_t r = mailstream_read(s->m->imap_stream, buf,
					    (size_t)n < sizeof buf ? (size_t)n : sizeof buf);

		if (r <= 0) {
			s->dead = true;
			return err_set(e, ERR_NET, "IDLE: connection to %s lost", s->host);
		}
		n -= r;
	}
	return 0;
}

/*
 * LIBETPAN.md 3: IDLE started by hand.  mailimap_idle() parses one untagged
 * response before the "+" and then blocks (issue #393); here every line before
 * the "+" is read: an untagged one means "something changed, sync after DONE",
 * a tagged one means IDLE was refused.
 */
int imap_idle_start(struct imap *s, struct err *e)
{
	mailstream *st;
	bool cont = false;
	char text[256];
	int r;

	err_clear(e);
	if (check_alive(s, e) < 0)
		return -1;
	if (!s->selected || !s->m->imap_selection_info)
		return err_set(e, ERR_FOLDER, "IDLE without a selected folder");
	if (!(s->caps & IMAP_CAP_IDLE))
		return err_set(e, ERR_FOLDER, "%s does not offer IDLE", s->host);
	st = s->m->imap_stream;
	s->m->imap_selection_info->sel_has_exists = 0;
	s->m->imap_selection_info->sel_has_recent = 0;
	s->idle_changed = s->unsolicited = false;
	r = mailimap_send_current_tag(s->m);
	if (r != MAILIMAP_NO_ERROR)
		return fail(s, r, ERR_NET, "IDLE", e);
	if (mailstream_write(st, "IDLE\r\n", 6) != 6 || mailstream_flush(st) < 0) {
		s->dead = true;
		return err_set(e, ERR_NET, "IDLE: connection to %s lost", s->host);
	}
	s->stats.commands = s->m->imap_tag;
	for (;;) {
		char *line = mailimap_read_line(s->m);
		long lit;

		if (!line) {
			s->dead = true;
			return err_set(e, ERR_NET, "IDLE: connection to %s lost or timed out", s->host);
		}
		if (!cont && line[0] == '+')
			break;
		if (!cont && line[0] != '*') {	/* the tagged answer: IDLE refused */
			const char *sp = strchr(line, ' ');

			clean_copy(text, sizeof text, sp ? sp + 1 : line, strcspn(sp ? sp + 1 : line, "\r\n"));
			return err_set(e, ERR_FOLDER, "IDLE refused by %s: %s", s->host, text);
		}
		if (!cont)
			s->idle_changed = true;
		lit = line_literal(line);
		if (lit > 1024 * 1024) {
			s->dead = true;
			return err_set(e, ERR_PROTO, "IDLE: a %ld-byte literal before the continuation",
				       lit);
		}
		if (lit >= 0 && skip_literal(s, lit, e) < 0)
			return -1;
		cont = lit >= 0;
	}
	s->idling = true;
	s->cmd_t0 = 0;	/* IDLE may last 25 min: no deadline until DONE is sent */
	return 0;
}

int imap_idle_fd(const struct imap *s)
{
	if (s->dead || !s->m->imap_stream)
		return -1;
	return mailimap_idle_get_fd(s->m);
}

int imap_idle_wait(struct imap *s, int timeout_ms, int cancel_fd, struct err *e)
{
	struct pollfd p[2] = { { .fd = imap_idle_fd(s), .events = POLLIN },
			       { .fd = cancel_fd, .events = POLLIN } };
	int r;

	err_clear(e);
	if (!s->idling)
		return err_set(e, ERR_PROTO, "imap_idle_wait without imap_idle_start");
	/* what libetpan already read is invisible to poll() (LIBETPAN.md 3) */
	if (s->idle_changed || s->m->imap_stream->read_buffer_len > 0)
		return 1;
	if (p[0].fd < 0) {
		s->dead = true;
		return err_set(e, ERR_NET, "IDLE: no connection to %s", s->host);
	}
	r = poll(p, cancel_fd >= 0 ? 2 : 1, timeout_ms);
	if (r < 0)
		return errno == EINTR ? 0 : err_sys(e, ERR_LOCAL, "poll");
	if (r == 0)
		return 0;
	if (cancel_fd >= 0 && (p[1].revents & POLLIN))
		return 2;
	if (p[0].revents & POLLIN)
		return 1;
	s->dead = true;	/* POLLERR / POLLHUP without data */
	return err_set(e, ERR_NET, "IDLE: connection to %s lost", s->host);
}

int imap_idle_done(struct imap *s, bool *changed_r, struct err *e)
{
	const struct mailimap_response_info *ri;
	size_t scanned = 0;
	int r;

	err_clear(e);
	if (changed_r)
		*changed_r = false;
	if (!s->idling)
		return err_set(e, ERR_PROTO, "imap_idle_done without imap_idle_start");
	s->idling = false;
	r = mailimap_idle_done(s->m);
	s->stats.commands = s->m->imap_tag;
	if (r == MAILIMAP_ERROR_EXTENSION) {	/* NO or BAD to DONE: nonsense */
		s->dead = true;
		return err_set(e, ERR_PROTO, "IDLE: %s refused DONE", s->host);
	}
	if (r != MAILIMAP_NO_ERROR)
		return fail(s, r, ERR_NET, "IDLE", e);
	if (check_numbers(s, &scanned, "IDLE", e) < 0 || exists_check(s, "IDLE", e) < 0)
		return -1;
	ri = s->m->imap_response_info;
	if (changed_r)
		*changed_r = s->idle_changed || s->unsolicited ||
			     s->m->imap_selection_info->sel_has_exists ||
			     (ri && ri->rsp_expunged && clist_count(ri->rsp_expunged) > 0) ||
			     vanished_count(s, false) > 0 || vanished_count(s, true) > 0;
	return 0;
}
