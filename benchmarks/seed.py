"""Seeding the farmers table directly with COPY (much faster than the API)."""

import io

import psycopg2

from dataserv.storage.store import TRUNCATE_ALL


def connect(dsn):
    """A synchronous autocommit connection (seeding and checks only)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


def truncate(dsn):
    """Empty every table."""
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(TRUNCATE_ALL)
    finally:
        conn.close()


def copy_farmers(dsn, rows):
    """COPY rows of (btc_addr, payout_addr, height, reg_time, last_seen); each
    farmer is credited the height it claims, since its registration."""
    buf = io.StringIO()
    for address, payout, height, reg_time, last_seen in rows:
        buf.write("%s\t%s\t%d\t%d\t%f\t%f\t%f\n" % (
            address, payout, height, height, reg_time, reg_time, last_seen))
    buf.seek(0)
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.copy_expert("COPY farmers (btc_addr, payout_addr, height, claimed_height,"
                            " reg_time, height_at, last_seen) FROM STDIN", buf)
            cur.execute("ANALYZE farmers")
    finally:
        conn.close()


def count(dsn, sql):
    """One number from a query."""
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]
    finally:
        conn.close()
