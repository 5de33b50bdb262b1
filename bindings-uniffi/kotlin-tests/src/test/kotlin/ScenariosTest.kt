// Seed 000's scenarios A, B and C, an idempotent replay and the errors, run on the JVM
// through the generated Kotlin binding against the real cdylib and a real SQLite file.

import billing.engine.BillingEngine
import billing.engine.BillingException
import billing.engine.CardAction
import billing.engine.ManualClock
import java.io.File
import java.nio.file.Files
import java.util.concurrent.ConcurrentLinkedQueue
import java.util.concurrent.CountDownLatch
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

class ScenariosTest {
    private val tariffs = File(System.getProperty("billing.repo.root"), "examples/tariffs.toml").readText()
    private val clock = ManualClock("2026-01-01T09:00:00Z")
    private val dbPath = Files.createTempDirectory("billing").resolve("billing.sqlite3").toString()
    private val billing = BillingEngine.openWithClock(dbPath, tariffs, clock)

    private fun sources(user: String, operation: String, keys: List<String>): List<String> =
        keys.map { billing.charge(user, operation, it, null).source }

    private fun nextDay() = clock.advanceSeconds(24L * 3600)

    @Test
    fun scenarioA_freeUserUsesTheFreeTierWithinItsDailyLimitThenCredits() {
        val state = billing.registerUser("alice", true)
        assertEquals(Triple("FREE", "10", 5u), Triple(state.planCode, state.credits, state.freemiumOpsLimit))
        assertEquals(listOf("freemium", "freemium", "freemium", "credits"), sources("alice", "generation", listOf("a1", "a2", "a3", "a4")))
        assertEquals("8", billing.state("alice").credits)
        nextDay()
        assertEquals(listOf("freemium", "freemium", "credits"), sources("alice", "generation", listOf("a5", "a6", "a7")))
        val after = billing.state("alice")
        assertEquals(Triple(5u, 0u, "6"), Triple(after.freemiumOpsUsed, after.freemiumOpsRemaining, after.credits))
        assertTrue(billing.verifyIntegrity())
    }

    @Test
    fun scenarioB_subscriberUsesPlanOpsThenTheFreeTierThenCredits() {
        billing.registerUser("bob", true)
        val details = billing.activateSubscription("bob", "basic", "pay-1")
        assertEquals(Triple("pro", "Basic", true), Triple(details.plan, details.planDisplay, details.isActive))
        assertEquals(List(30) { "subscription" }, sources("bob", "assistant", (1..30).map { "s$it" }))
        assertEquals(0u, billing.state("bob").subscriptionOpsRemaining)
        assertEquals(listOf("freemium", "freemium", "freemium", "credits"), sources("bob", "generation", listOf("f1", "f2", "f3", "c1")))
        val me = billing.billingMe("bob")
        assertEquals(Pair("basic", null), Pair(me.planCode, me.dailyPhotoLimit))
        clock.advanceSeconds(30L * 24 * 3600)
        assertEquals("FREE", billing.state("bob").planCode)
    }

    @Test
    fun scenarioC_nothingLeftIsRefusedWithTheContractsCodes() {
        billing.registerUser("carol", false)
        sources("carol", "assistant", listOf("k0", "k1", "k2"))
        val daily = assertThrows<BillingException.Failed> { billing.charge("carol", "assistant", "k3", null) }
        assertEquals("DAILY_LIMIT_REACHED", daily.code)
        nextDay()
        sources("carol", "assistant", listOf("k4", "k5"))
        val quote = billing.quote("carol", "generation")
        assertEquals(Pair(false, "NOT_ENOUGH_CREDITS"), Pair(quote.allowed, quote.reasonCode))
        val entriesBefore = billing.ledger("carol", 50u, null)
        val refused = assertThrows<BillingException.Failed> { billing.charge("carol", "generation", "k6", null) }
        assertEquals("NOT_ENOUGH_CREDITS", refused.code)
        assertEquals("""{"available":"0","required":"2"}""", refused.detailsJson)
        assertEquals(entriesBefore, billing.ledger("carol", 50u, null), "a refused charge writes nothing")
        billing.grantCredits("carol", "5", "topup", "support")
        assertEquals("3", billing.charge("carol", "generation", "k6", null).creditsBalance)
    }

    @Test
    fun aReplayReturnsTheFirstChargeAndAnotherRequestUnderTheKeyConflicts() {
        billing.registerUser("dan", true)
        val first = billing.charge("dan", "generation", "req-1", """{"prompt":7}""")
        val again = billing.charge("dan", "generation", "req-1", """{"prompt":7}""")
        assertEquals(Triple(first.id, false, true), Triple(again.id, first.replayed, again.replayed))
        val conflict = assertThrows<BillingException.Failed> { billing.charge("dan", "assistant", "req-1", null) }
        assertEquals("IDEMPOTENCY_CONFLICT", conflict.code)
        val refund = billing.refundCharge(first.id, "refund-1", "generation failed")
        assertEquals(Pair(true, "freemium"), Pair(refund.opReturned, refund.source))
        val ledger = billing.ledger("dan", 10u, null)
        assertEquals(listOf("refund", "charge", "free_trial"), ledger.map { it.kind })
        assertEquals("""{"prompt":7}""", ledger[1].metadataJson)
    }

    @Test
    fun badInputAndUnknownUsersGiveTheirCodes() {
        val unknown = assertThrows<BillingException.Failed> { billing.state("ghost") }
        assertEquals(Pair("UNKNOWN_USER", """{"user_id":"ghost"}"""), Pair(unknown.code, unknown.detailsJson))
        billing.registerUser("eve", true)
        val empty = assertThrows<BillingException.Failed> { billing.charge("eve", "generation", "", null) }
        assertEquals("INVALID_ARGUMENT", empty.code)
        val money = assertThrows<BillingException.Failed> { billing.grantCredits("eve", "ten", "g", "x") }
        assertTrue(money.detailsJson.contains("\"field\":\"amount\""))
        val catalog = assertThrows<BillingException.Failed> { BillingEngine.open(dbPath, "currency = 1") }
        assertEquals("INVALID_CATALOG", catalog.code)
    }

    @Test
    fun threadsSharingOneEngineSpendEachCreditOnce() {
        billing.registerUser("gil", true) // 10 credits and 3 free ops today: 13 assistant charges fit
        val start = CountDownLatch(1)
        val outcomes = ConcurrentLinkedQueue<String>()
        val threads = (0 until 8).map { worker ->
            Thread {
                start.await()
                repeat(6) { attempt ->
                    val outcome = try {
                        billing.charge("gil", "assistant", "t$worker-$attempt", null).source
                    } catch (e: BillingException.Failed) {
                        e.code
                    }
                    outcomes.add(outcome)
                }
            }.apply { start() }
        }
        start.countDown()
        threads.forEach { it.join() }
        assertEquals(13, outcomes.count { it == "credits" || it == "freemium" })
        assertEquals(setOf("credits", "freemium", "DAILY_LIMIT_REACHED"), outcomes.toSet())
        assertEquals("0", billing.state("gil").credits)
        assertTrue(billing.verifyIntegrity())
    }

    @Test
    fun planCardsComeFromTheEngine() {
        billing.registerUser("finn", true)
        val free = billing.planCards("finn")
        assertEquals(listOf("FREE", "basic", "standard", "premium"), free.map { it.planCode })
        assertTrue(free[0].isCurrent)
        assertEquals(List(3) { CardAction.SELECT }, free.drop(1).map { it.action })
        billing.activateSubscription("finn", "standard", "paid")
        val pro = billing.planCards("finn")
        assertEquals(listOf("plan_card.basic_access", "plan_card.available_with_subscription", "plan_card.current", "plan_card.available_with_subscription"), pro.map { it.labelKey })
        assertEquals(CardAction.BIND_CARD, pro[2].action)
        assertFalse(pro[2].details!!.paymentMethod.isAttached)
        assertEquals("699.00", billing.plans()[2].price)
    }
}
