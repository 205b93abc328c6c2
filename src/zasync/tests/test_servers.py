"""The test servers are real: data written by one client is read by another.
"""
import unittest

import persistent.mapping
import transaction

from zasync.testing.servers import PostgreSQLLayer
from zasync.testing.servers import ZEOLayer


class SharedDatabaseChecks:

    def check_two_clients_share_data(self, server):
        writer_db, reader_db = server.db(), server.db()
        try:
            tm = transaction.TransactionManager()
            conn = writer_db.open(transaction_manager=tm)
            conn.root()['shared'] = persistent.mapping.PersistentMapping(
                answer=42)
            tm.commit()
            conn.close()
            tm = transaction.TransactionManager()
            conn = reader_db.open(transaction_manager=tm)
            tm.begin()   # a new transaction sees the latest commits
            self.assertEqual(conn.root()['shared']['answer'], 42)
            conn.close()
        finally:
            writer_db.close()
            reader_db.close()


class ZEOServerTests(SharedDatabaseChecks, unittest.TestCase):

    layer = ZEOLayer

    def test_two_clients_share_data(self):
        self.check_two_clients_share_data(ZEOLayer.server)

    def test_restart_keeps_data_and_port(self):
        server = ZEOLayer.server
        db = server.db()
        try:
            tm = transaction.TransactionManager()
            conn = db.open(transaction_manager=tm)
            conn.root()['before_restart'] = 1
            tm.commit()
            port = server.port
            server.stop()
            server.start()
            self.assertEqual(server.port, port)
            tm.begin()
            conn.root()['after_restart'] = 2
            tm.commit()
            conn.close()
        finally:
            db.close()
        db = server.db()
        try:
            root = db.open().root()
            self.assertEqual(
                (root['before_restart'], root['after_restart']), (1, 2))
        finally:
            db.close()


class PostgreSQLServerTests(SharedDatabaseChecks, unittest.TestCase):

    layer = PostgreSQLLayer

    def test_two_clients_share_data(self):
        self.check_two_clients_share_data(PostgreSQLLayer.server)
