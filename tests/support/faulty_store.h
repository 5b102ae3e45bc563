/* faulty_store.h: faults injected between Baton and the real database driver, for tests
 * of what Baton does when the database's answer goes missing. Not a mock: every call
 * still reaches the real driver, and the database does what it was asked. */
#ifndef BT_TEST_FAULTY_STORE_H
#define BT_TEST_FAULTY_STORE_H

#include "store/store.h"

/* faulty_store_install wraps every store opened from now on (bt_store_open_hook);
 * faulty_store_remove stops wrapping new ones. Call both from the test's main thread
 * while no other thread opens a store. */
void faulty_store_install(void);
void faulty_store_remove(void);

/* faulty_store_lose_next_claim_commit arms one fault: the next commit of a transaction
 * that claimed at least one job commits on the server, then reports the connection lost
 * before its answer (BATON_ESTORE, with commit_unknown set), as when the network breaks
 * just after the server received COMMIT. */
void faulty_store_lose_next_claim_commit(void);
/* faulty_store_fail_statements makes every statement whose text holds needle fail
 * (BATON_ERROR) from now on; NULL stops it. needle must outlive the fault. */
void faulty_store_fail_statements(const char *needle);
/* How many commits' answers were lost so far. */
int faulty_store_commits_lost(void);

#endif
