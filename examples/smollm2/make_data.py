"""Build the SmolLM2 example's data from BANKING77 (CC BY 4.0, shipped in ../banking77/data/).

The task: name the topic of a bank customer's message in one word, one of seven topics that group
BANKING77's 77 intents (card, payment, transfer, topup, cash, exchange, account). The system prompt
(in config.yaml) names the seven words, so the untouched model can try it zero- and few-shot.

Rows are drawn balanced over the topics (and spread over the intents inside each), seeded, so the
files are the same on every machine:
    python examples/smollm2/make_data.py        # writes train.jsonl, validation.jsonl, test.jsonl here
train and validation come from BANKING77's train.csv (disjoint), test from its test.csv.
"""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "banking77" / "data"
SIZES = {"train": 200, "validation": 35, "test": 100}
SEED = 7

TOPICS: dict[str, list[str]] = {
    "card": ["activate_my_card", "apple_pay_or_google_pay", "card_about_to_expire", "card_acceptance", "card_arrival",
             "card_delivery_estimate", "card_linking", "card_not_working", "card_swallowed", "contactless_not_working",
             "disposable_card_limits", "get_disposable_virtual_card", "get_physical_card", "getting_spare_card",
             "getting_virtual_card", "order_physical_card", "supported_cards_and_currencies", "virtual_card_not_working",
             "visa_or_mastercard"],
    "payment": ["card_payment_fee_charged", "card_payment_not_recognised", "declined_card_payment", "pending_card_payment",
                "reverted_card_payment?", "transaction_charged_twice", "direct_debit_payment_not_recognised",
                "extra_charge_on_statement", "request_refund", "Refund_not_showing_up"],
    "transfer": ["balance_not_updated_after_bank_transfer", "beneficiary_not_allowed", "cancel_transfer", "declined_transfer",
                 "failed_transfer", "pending_transfer", "receiving_money", "transfer_fee_charged", "transfer_into_account",
                 "transfer_not_received_by_recipient", "transfer_timing"],
    "topup": ["automatic_top_up", "balance_not_updated_after_cheque_or_cash_deposit", "pending_top_up",
              "top_up_by_bank_transfer_charge", "top_up_by_card_charge", "top_up_by_cash_or_cheque", "top_up_failed",
              "top_up_limits", "top_up_reverted", "topping_up_by_card", "verify_top_up"],
    "cash": ["atm_support", "cash_withdrawal_charge", "cash_withdrawal_not_recognised", "declined_cash_withdrawal",
             "pending_cash_withdrawal", "wrong_amount_of_cash_received", "wrong_exchange_rate_for_cash_withdrawal"],
    "exchange": ["card_payment_wrong_exchange_rate", "exchange_charge", "exchange_rate", "exchange_via_app", "fiat_currency_support"],
    "account": ["age_limit", "change_pin", "compromised_card", "country_support", "edit_personal_details", "lost_or_stolen_card",
                "lost_or_stolen_phone", "passcode_forgotten", "pin_blocked", "terminate_account", "unable_to_verify_identity",
                "verify_my_identity", "verify_source_of_funds", "why_verify_identity"],
}
TOPIC_OF = {intent: topic for topic, intents in TOPICS.items() for intent in intents}


def read(name: str) -> dict[str, list[str]]:
    """Texts of a BANKING77 file by topic, each topic's texts interleaved over its intents."""
    by_intent: dict[str, list[str]] = defaultdict(list)
    with open(SOURCE / name, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_intent[row["category"]].append(" ".join(row["text"].split()))
    missing = set(by_intent) ^ set(TOPIC_OF)
    assert not missing, f"intents not mapped to a topic (or mapped but absent): {sorted(missing)}"
    rng = random.Random(SEED)
    out: dict[str, list[str]] = {}
    for topic, intents in TOPICS.items():
        queues = [rng.sample(by_intent[i], len(by_intent[i])) for i in intents]
        rng.shuffle(queues)
        mixed = [q[k] for k in range(max(map(len, queues))) for q in queues if k < len(q)]  # round robin over intents
        out[topic] = list(dict.fromkeys(mixed))  # BANKING77 has a few repeated texts
    return out


def take(pools: dict[str, list[str]], n: int) -> list[tuple[str, str]]:
    """``n`` (text, topic) rows, round robin over the topics, removed from ``pools``."""
    rows: list[tuple[str, str]] = []
    while len(rows) < n:
        for topic in TOPICS:
            if len(rows) < n:
                rows.append((pools[topic].pop(0), topic))
    random.Random(SEED + n).shuffle(rows)
    return rows


def write(name: str, rows: list[tuple[str, str]]) -> None:
    lines = [json.dumps({"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": topic}]}) for text, topic in rows]
    (HERE / f"{name}.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def main() -> None:
    train = read("train.csv")
    write("train", take(train, SIZES["train"]))
    write("validation", take(train, SIZES["validation"]))
    write("test", take(read("test.csv"), SIZES["test"]))
    print(f"wrote {', '.join(f'{k}.jsonl ({v} rows)' for k, v in SIZES.items())} to {HERE}")


if __name__ == "__main__":
    main()
