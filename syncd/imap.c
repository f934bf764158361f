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
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <libetpan/libetpan.h>

/* ---- session ---- */

enum fetch_kind { FETCH_META, FETCH_BODIES };

/* The FETCH command in progress.  libetpan's handlers are installed for the
 * whole session, so anything arriving while no fetch_op is active (or the op
 * has failed) is unsolicited and ignored. */
struct fetch_op {
	enum fetch_kind kind;
	struct err *e;
	bool failed;		/* refused or aborted: ignore the rest, the session dies */
	struct buf flags;	/* flag string of the item being handed out */

	uint32_t lo, hi;	/* META: sequence range asked for */
	imap_meta_cb *cb;
	void *ctx;

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
	bool preauth;
	unsigned caps;
	struct imap_stats stats;
	struct fetch_op *op;
	char label[128];
};

static bool host_is_address(const char *h)
{
	unsigned char a[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, h, a) == 1 || inet_pton(AF_INET6, h, a) == 1;
}

/* A second line of defence behind the configuration check: `imap_tls = none`
 * must never carry a password over a real network. */
static bool host_is_loopback(const char *h)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (!strcasecmp(h, "localhost"))
		return true;
	if (inet_pton(AF_INET, h, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	return inet_pton(AF_INET6, h, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

bool imap_is_dead(const struct imap *s)
{
	return s->dead;
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
	return 0;
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

/* libetpan's logger: commands and the start of each chunk received.  LOGIN is
 * sent with the stream's privacy flag off, so it arrives here as
 * DATA_SENT_PRIVATE; a LOGIN seen as ordinary data is hidden all the same. */
static void trace(mailimap *m, int type, const char *str, size_t size, void *ctx)
{
	struct imap *s = ctx;
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
	if (att->att_number < op->lo || att->att_number > op->hi) {
		op_refuse(op, "server answered for message %u, outside %u:%u",
			  att->att_number, op->lo, op->hi);
		return;
	}
	if (!it.has_uid || it.uid == 0) {
		op_refuse(op, "server sent no valid UID for message %u", att->att_number);
		return;
	}
	if (!it.has_flags) {
		op_refuse(op, "server sent no FLAGS for UID %u", it.uid);
		return;
	}
	if (!seen_add(op, att->att_number)) {
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

/* Runs once per "* n FETCH" after the whole item is parsed; att is freed
 * when it returns. */
static void on_msg_att(struct mailimap_msg_att *att, void *ctx)
{
	struct imap *s = ctx;
	struct fetch_op *op = s->op;

	if (!op || op->failed || !att || !att->att_list)
		return;
	if (op->kind == FETCH_META)
		meta_item(s, op, att);
	else
		body_item(s, op, att);
}

/* Runs with each chunk (<= 64 KiB) of a literal body; false aborts the parse
 * and leaves the stream out of sync, which is what we want after a refusal. */
static bool on_body(int type, struct mailimap_msg_att_body_section *sec, const char *p, size_t n,
		    void *ctx)
{
	struct imap *s = ctx;
	struct fetch_op *op = s->op;

	s->stats.body_bytes += (int64_t)n;
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
	s->sni = !host_is_address(o->host);
	snprintf(s->label, sizeof s->label, "%s", o->label ? o->label : o->host);
	/* Copied into the stream at connect time only (LIBETPAN.md section 5). */
	mailimap_set_timeout(s->m, o->timeout > 0 ? o->timeout : 60);
	mailimap_set_msg_att_handler(s->m, on_msg_att, s);
	mailimap_set_msg_body_handler(s->m, on_body, s);
	mailimap_set_progress_callback(s->m, NULL, on_items_progress, s);
	if (log_debug_on(LOGC_IMAP))
		mailimap_set_logger(s->m, trace, s);
	return s;
}

int imap_connect(const struct imap_opts *o, struct imap **s_r, struct err *e)
{
	struct imap *s;

	*s_r = NULL;
	err_clear(e);
	if (o->tls == TLS_NONE && !host_is_loopback(o->host))
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
	if (s->caps & IMAP_CAP_CONDSTORE)
		r = mailimap_examine_condstore(s->m, name, &hms);
	else
		r = mailimap_examine(s->m, name);
	if (r != MAILIMAP_NO_ERROR)
		return fail(s, r, ERR_FOLDER, "EXAMINE", e);
	s->stats.commands = s->m->imap_tag;
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
	return 0;
}

/* ---- FETCH ---- */

static struct mailimap_fetch_type *fetch_type_new(bool bodies)
{
	struct mailimap_fetch_type *ft = mailimap_fetch_type_new_fetch_att_list_empty();

	mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_uid());
	mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_flags());
	if (bodies)
		mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_internaldate());
	mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_rfc822_size());
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
	free(op->seen);
	free(op->ranges);
	s->stats.commands = s->m->imap_tag;
	if (op->failed) {
		s->dead = true;
		return -1;
	}
	if (r != MAILIMAP_NO_ERROR)
		return fail(s, r, ERR_FOLDER, what, e);
	/* A message missing from the remote view would look deleted on the
	 * server: an incomplete answer must not pass for a complete one. */
	if (op->kind == FETCH_META && op->seen_n != (size_t)op->hi - op->lo + 1)
		return err_set(e, ERR_FOLDER, "FETCH %u:%u: server answered for %zu of %u messages",
			       op->lo, op->hi, op->seen_n, op->hi - op->lo + 1);
	return 0;
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
	clist *list = NULL;
	int r;

	err_clear(e);
	if (fetch_check(s, e) < 0)
		return -1;
	if (seq_lo == 0 || seq_hi < seq_lo)
		return err_set(e, ERR_FOLDER, "invalid sequence range %u:%u", seq_lo, seq_hi);
	set = mailimap_set_new_interval(seq_lo, seq_hi);
	ft = fetch_type_new(false);
	s->op = &op;
	r = mailimap_fetch(s->m, set, ft, &list);
	mailimap_fetch_type_free(ft);
	mailimap_set_free(set);
	return fetch_finish(s, &op, r, list, "FETCH", e);
}

int imap_fetch_bodies(struct imap *s, const struct uid_range *ranges, size_t nranges,
		      const struct imap_body_sink *sink, void *ctx, struct err *e)
{
	struct fetch_op op = { .kind = FETCH_BODIES, .e = e, .sink = sink, .ctx = ctx };
	struct mailimap_set *set;
	struct mailimap_fetch_type *ft;
	clist *list = NULL;
	int r;

	err_clear(e);
	if (fetch_check(s, e) < 0)
		return -1;
	if (nranges == 0)
		return 0;
	for (size_t i = 0; i < nranges; i++)
		if (ranges[i].lo == 0 || ranges[i].hi < ranges[i].lo)
			return err_set(e, ERR_FOLDER, "invalid UID range %u:%u", ranges[i].lo,
				       ranges[i].hi);
	set = mailimap_set_new_empty();
	for (size_t i = 0; i < nranges; i++)
		mailimap_set_add_interval(set, ranges[i].lo, ranges[i].hi);
	op.ranges = xmalloc(nranges * sizeof *op.ranges);
	memcpy(op.ranges, ranges, nranges * sizeof *op.ranges);
	op.nranges = ranges_normalise(op.ranges, nranges);
	ft = fetch_type_new(true);
	s->op = &op;
	r = mailimap_uid_fetch(s->m, set, ft, &list);
	mailimap_fetch_type_free(ft);
	mailimap_set_free(set);
	return fetch_finish(s, &op, r, list, "UID FETCH", e);
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
