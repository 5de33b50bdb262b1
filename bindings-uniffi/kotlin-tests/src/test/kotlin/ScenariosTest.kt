// Seed 000's scenarios A, B and C, an idempotent replay and the errors, run on the JVM
// through the generated Kotlin binding against the real cdylib and a real SQLite file.

import billing.engine.BillingEngine
import billing.engine.BillingException
import billing.engine.ChargeRequest
import billing.engine.ChargeResult
import billing.engine.core.AuditFilter
import billing.engine.core.AuditOutcome
import billing.engine.core.CardAction
import billing.engine.core.EventType
import billing.engine.core.ChargeSource
import billing.engine.core.EntryKind
import billing.engine.core.GrantTerms
import billing.engine.core.HoldStatus
import billing.engine.core.LotCategory
import billing.engine.core.LotSource
import billing.engine.core.UsageGroup
import billing.engine.core.UsageLabels
import billing.engine.core.UsageRequest
import billing.engine.ManualClock
import billing.engine.errorCodes
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
        keys.map { billing.charge(user, operation, it, null).source.name.lowercase() }

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
        assertTrue(billing.verifyIntegrity().ok)
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
        val daily = assertThrows<BillingException.DailyLimitReached> { billing.charge("carol", "assistant", "k3", null) }
        assertEquals(Pair(3u, "2026-01-01T21:00:00.000Z"), Pair(daily.limit, daily.resetsAt))
        nextDay()
        sources("carol", "assistant", listOf("k4", "k5"))
        val quote = billing.quote("carol", "generation")
        assertEquals(Pair(false, "NOT_ENOUGH_CREDITS"), Pair(quote.allowed, quote.reasonCode))
        val entriesBefore = billing.ledger("carol", 50u, null)
        val refused = assertThrows<BillingException.NotEnoughCredits> { billing.charge("carol", "generation", "k6", null) }
        assertEquals(Pair("2", "0"), Pair(refused.required, refused.available))
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
        val conflict = assertThrows<BillingException.IdempotencyConflict> { billing.charge("dan", "assistant", "req-1", null) }
        assertEquals("req-1", conflict.key)
        val refund = billing.refundCharge(first.id, "refund-1", "generation failed")
        assertEquals(Triple(true, ChargeSource.FREEMIUM, "dan"), Triple(refund.opReturned, refund.source, refund.userId))
        val ledger = billing.ledger("dan", 10u, null)
        assertEquals(listOf(EntryKind.REFUND, EntryKind.CHARGE, EntryKind.FREE_TRIAL), ledger.map { it.kind })
        assertEquals("""{"prompt":7}""", ledger[1].metadata)
    }

    @Test
    fun badInputAndUnknownUsersGiveTheirCodes() {
        val unknown = assertThrows<BillingException.UnknownUser> { billing.state("ghost") }
        assertEquals("ghost", unknown.userId)
        billing.registerUser("eve", true)
        val empty = assertThrows<BillingException.InvalidArgument> { billing.charge("eve", "generation", "", null) }
        assertEquals("idempotency_key", empty.field)
        val money = assertThrows<BillingException.InvalidArgument> { billing.grantCredits("eve", "ten", "g", "x") }
        assertEquals("amount", money.field)
        val catalog = assertThrows<BillingException.InvalidCatalog> { BillingEngine.open(dbPath, "currency = 1") }
        assertEquals("currency", catalog.path)
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
                        billing.charge("gil", "assistant", "t$worker-$attempt", null).source.name.lowercase()
                    } catch (e: BillingException.DailyLimitReached) {
                        "DAILY_LIMIT_REACHED"
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
        assertTrue(billing.verifyIntegrity().ok)
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

    @Test
    fun everyCodeOfTheEnginesTableHasItsOwnException() {
        val variants = BillingException::class.java.declaredClasses.map { it.simpleName }.toSet()
        // UniFFI's Kotlin names a variant ending in `Error` with `Exception` instead.
        val camel = { code: String ->
            code.lowercase().split('_').joinToString("") { it.replaceFirstChar(Char::uppercase) }.replace(Regex("Error$"), "Exception")
        }
        // INTERNAL_ERROR is a caught panic: UniFFI's own InternalException in Kotlin.
        val codes = errorCodes().filter { it != "INTERNAL_ERROR" }
        assertEquals(22, codes.size)
        assertEquals(emptyList<String>(), codes.map(camel).filterNot { it in variants })
    }

    @Test
    fun everyFieldOfEveryResultReachesKotlin() {
        billing.registerUser("hana", true)
        val charge = billing.charge("hana", "generation", "h1", """{"chat":"c1"}""")
        assertEquals(listOf<Any?>("hana", "generation", ChargeSource.FREEMIUM, "0", "10", false),
            listOf<Any?>(charge.userId, charge.operation, charge.source, charge.creditsSpent, charge.creditsBalance, charge.replayed))
        val refund = billing.refundCharge(charge.id, "h1-refund", null)
        assertEquals(listOf<Any?>(charge.id, "hana", "0", "10", false),
            listOf<Any?>(refund.chargeId, refund.userId, refund.creditsRefunded, refund.creditsBalance, refund.replayed))
        val entry = billing.ledger("hana", 1u, null).single()
        assertEquals(listOf<Any?>(refund.id, "hana", EntryKind.REFUND, ChargeSource.FREEMIUM, "generation", "0", "10", -1, "freemium", "2026-01-01",
                "h1-refund", charge.id.toString(), null),
            listOf<Any?>(entry.id, entry.userId, entry.kind, entry.source, entry.operation, entry.creditsDelta,
            entry.creditsBalanceAfter, entry.opsDelta, entry.allowance?.owner, entry.opDay, entry.idempotencyKey, entry.reference, entry.metadata))
        assertEquals(Pair("2026-01-01T09:00:00.000Z", "2026-01-01T09:00:00.000Z"), Pair(entry.createdAt, entry.allowance?.start))
        val quote = billing.quote("hana", "generation")
        assertEquals(listOf<Any?>(true, ChargeSource.FREEMIUM, "0", "10", null),
            listOf<Any?>(quote.allowed, quote.source, quote.creditsCost, quote.creditsAfter, quote.reasonCode))
        billing.grantCredits("hana", "-25", "h-debt", "correction")
        val report = billing.verifyIntegrity()
        assertEquals(Triple(true, 0, 1uL), Triple(report.ok, report.mismatches.size, report.usersChecked))
        assertEquals(4uL, report.entriesChecked)
        val state = billing.state("hana")
        assertEquals(listOf<Any?>("hana", "Free", "free", false, null, "-15", null, null, null, null, 0u, 5u, "2026-01-31T09:00:00.000Z", 3u, 0u, 3u,
                "2026-01-01T21:00:00.000Z", false),
            listOf<Any?>(state.userId, state.planName, state.tier, state.isActive, state.expiresAt, state.credits,
            state.subscriptionOpsLimit, state.subscriptionOpsUsed, state.subscriptionOpsRemaining, state.subscriptionOpsResetAt,
            state.freemiumOpsUsed, state.freemiumOpsRemaining, state.freemiumResetAt, state.dailyLimit, state.usedToday,
            state.remainingToday, state.todayResetsAt, state.autorenewEnabled))
        val plan = billing.plans()[1]
        assertEquals(listOf<Any?>("basic", "Basic", 30u, null, -1, true, false, false, listOf("ai_recognition"), false, null),
            listOf<Any?>(plan.code, plan.displayName, plan.durationDays, plan.dailyPhotoLimit, plan.historyDays,
            plan.aiRecognition, plan.advancedStats, plan.prioritySupport, plan.features, plan.isPopular, plan.oldPrice))
    }

    @Test
    fun everyFieldOfTheSubscriptionViewsAndCardsReachesKotlin() {
        billing.registerUser("ivo", true)
        billing.activateSubscription("ivo", "basic", "ivo-paid")
        val me = billing.billingMe("ivo")
        assertEquals(listOf<Any?>("basic", "Basic", "2026-01-31T09:00:00.000Z", true, null, 0u, null),
            listOf<Any?>(me.planCode, me.planName, me.expiresAt, me.isActive, me.dailyPhotoLimit, me.usedToday, me.remainingToday))
        val details = billing.subscriptionDetails("ivo")
        assertEquals(listOf<Any?>("pro", "Basic", "2026-01-31T09:00:00.000Z", true, false, false, false, false, null, null),
            listOf<Any?>(details.plan, details.planDisplay, details.expiresAt, details.isActive, details.autorenewAvailable,
                details.autorenewEnabled, details.cardBound, details.paymentMethod.isAttached, details.paymentMethod.cardMask,
                details.paymentMethod.cardBrand))
        val card = billing.planCards("ivo").single { it.isCurrent }
        val shown = card.details!!
        assertEquals(listOf<Any?>("basic", true, false, CardAction.BIND_CARD, "plan_card.current"),
            listOf<Any?>(card.planCode, card.isCurrent, card.disabled, card.action, card.labelKey))
        assertEquals(listOf<Any?>("2026-01-31T09:00:00.000Z", false, false, false, null),
            listOf<Any?>(shown.expiresAt, shown.expired, shown.autorenewEnabled, shown.paymentMethod.isAttached, shown.restorePrice))
        // A mismatch needs a damaged file; its fields are checked by the compiler here.
        val mismatchFields: (billing.engine.core.Mismatch) -> List<String> = { listOf(it.userId, it.check, it.ledger, it.stored) }
        assertEquals(emptyList<List<String>>(), billing.verifyIntegrity().mismatches.map(mismatchFields))
    }

    @Test
    fun aBatchAnswersEachRequestInOrderAndARefusalIsItsOwnResult() {
        billing.registerUser("jan", true)
        val results = billing.chargeBatch(listOf(
            ChargeRequest("jan", "generation", "j1", """{"chat":"c1"}"""),
            ChargeRequest("jan", "no-such-operation", "j2", null),
            ChargeRequest("jan", "generation", "j3", "not json"),
            ChargeRequest("jan", "generation", "j1", """{"chat":"c1"}"""),
        ))
        val first = (results[0] as ChargeResult.Charged).charge
        assertEquals(Pair("freemium", false), Pair(first.source.name.lowercase(), first.replayed))
        val unknown = (results[1] as ChargeResult.Refused).error
        assertTrue(unknown is BillingException.UnknownOperation)
        val notJson = (results[2] as ChargeResult.Refused).error
        assertEquals("metadata_json", (notJson as BillingException.InvalidArgument).field)
        val replay = (results[3] as ChargeResult.Charged).charge
        assertEquals(Pair(first.id, true), Pair(replay.id, replay.replayed))
        assertEquals(1, billing.ledger("jan", 10u, null).count { it.kind == EntryKind.CHARGE })
    }

    @Test
    fun usageIsCheckedTrackedAndHeldThenCapturedOnce() {
        billing.registerUser("kim", true)
        val check = billing.checkUsage("kim", mapOf("tokens_input" to 1200uL, "requests" to 1uL))
        assertTrue(check.allowed)
        assertEquals(50000uL, check.metrics.first { it.metric == "tokens_input" }.remaining)
        val record = billing.trackUsage("kim", UsageRequest("tokens_input", 49500uL, "gpt", "c1", null, null), "t1")
        assertFalse(record.overLimit)
        val refused = assertThrows<BillingException.QuotaExceeded> { billing.requireUsage("kim", mapOf("tokens_input" to 501uL)) }
        assertEquals(Pair("tokens_input", "period"), Pair(refused.metric, refused.window))

        val hold = billing.reserve("kim", mapOf("tokens_input" to 400uL), "assistant", "h1", 600uL)
        assertEquals(HoldStatus.OPEN, hold.status)
        assertEquals(400uL, billing.usage("kim", "tokens_input").held)
        val captured = billing.capture(hold.id, mapOf("tokens_input" to 100uL), UsageLabels(null, "c2"), "c1")
        assertEquals(HoldStatus.CAPTURED, captured.status)
        assertTrue(billing.release(hold.id, "r1").replayed)
        assertEquals(49600uL, billing.usage("kim", "tokens_input").used)
        val byModel = billing.usageBreakdown("kim", "tokens_input", UsageGroup.MODEL_ID, null, null)
        assertEquals(listOf("gpt" to 49500uL, null to 100uL).toSet(), byModel.map { it.key to it.amount }.toSet())

        val missing = assertThrows<BillingException.FeatureNotAvailable> { billing.requireFeature("kim", "ai_recognition") }
        assertEquals("basic", missing.cheapestPlan)
        assertEquals(3uL, billing.entitlements("kim").features.first { it.name == "max_chats" }.limit)
        assertTrue(billing.verifyIntegrity().ok)
    }

    @Test
    fun aGrantIsALotThatCanBeVoidedOnce() {
        billing.registerUser("lee", false)
        val terms = GrantTerms(null, 10u.toUByte(), LotCategory.PROMOTIONAL)
        val grant = billing.grantCreditsOn("lee", "5", "g1", "promo", terms)
        val lot = billing.creditLots("lee").single()
        assertEquals(Triple(grant.id, LotSource.GRANT, "5"), Triple(lot.id, lot.source, lot.remaining))
        val voided = billing.voidGrant(lot.id, "v1", "mistake")
        assertEquals(EntryKind.CREDIT_VOIDED, voided.kind)
        assertEquals(voided.id, billing.voidGrant(lot.id, "v1", "mistake").id)
        val missing = assertThrows<BillingException.GrantNotFound> { billing.voidGrant(987654321L, "v2", "none") }
        assertEquals(987654321L, missing.lotId)
        assertTrue(billing.verifyIntegrity().ok)
    }

    @Test
    fun eventsAuditAndPaymentsReadAsTheServerRecordedThem() {
        billing.registerUser("max", true)
        billing.grantCreditsOn("max", "5", "g1", "promo", GrantTerms(null, 50u.toUByte(), LotCategory.PROMOTIONAL))
        val events = billing.userEvents("max", 0L, 10u)
        assertEquals(listOf(EventType.CREDITS_GRANTED, EventType.CREDITS_GRANTED), events.map { it.eventType })
        assertEquals(listOf(1L, 2L), events.map { it.sequence })
        assertEquals(events.drop(1), billing.userEvents("max", 1L, 10u))
        assertTrue(events[1].payload.contains("\"balance_after\":\"15\""), events[1].payload)
        val audit = billing.auditLog(AuditFilter("max", null, "credits.grant", null), 10u, null)
        assertEquals(listOf(AuditOutcome.APPLIED), audit.map { it.outcome })
        assertEquals(Pair("system", "promo"), Pair(audit[0].actor, audit[0].reason))
        assertEquals(emptyList<Any>(), billing.payments("max", 10u))
        assertEquals(null, billing.billingMe("max").lastPayment)
    }
}
