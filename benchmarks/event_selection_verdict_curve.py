"""How fast SmolLM2-135M learns event_selection's rule by SFT: a learning curve of its per-event verdicts.

    rewardlab models fetch smollm2-135m      # once
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/event_selection_verdict_curve.py --steps 200 --every 20
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/event_selection_verdict_curve.py --isolated-steps 60 \\
        --steps 60 --every 20

A diagnostic, not a training recipe. Each demonstration restates every event of a level-1 log (its idle and
duration seconds, its context switches, a distracting site or "none") and ends the line with the rule's
verdict, then gives the JSON answer::

    e03: idle 581 of 620, switches 1, site none -> yes

LoRA (rank 16, all linear layers, float32 adapters over the bfloat16 model) trains on these with AdamW at a
constant learning rate after 5 warmup steps. Every ``--every`` steps the verdicts of 40 held-out logs are read
teacher-forced: at each verdict position, whether " yes" outscores " no". That separates deciding from
copying: the restating is learned in a few steps, and what remains is whether the model can map an event's
numbers to the rule. Prints verdict accuracy (against always answering "no") and recall of the "yes" events.

``--isolated-steps K`` makes the first K steps train on restated lines alone (``--lines-per-step`` of them),
without the system prompt or the log around them, with the loss on the verdict token only; the steps after
K train on whole logs as above. A line costs about 25 tokens where a log in its prompt costs about 800, so
this asks whether the model can learn the rule at all for a given number of verdicts seen, apart from what a
full demonstration costs, and whether what it learns carries over into the log. It then also prints the
accuracy on 600 held-out lines alone.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
from peft import LoraConfig, get_peft_model

from rewardlab.envs.builtin.event_selection import DISTRACTING_SITES, load_environment, low_productivity
from rewardlab.models.loading import load_model

HELD_OUT_LOGS = 40
HELD_OUT_LINES = 600


def restated(event: dict) -> str:
    """An event's line of the demonstration, up to its verdict."""
    site = next((s for s in DISTRACTING_SITES if s in event["title"]), "none")
    return (
        f"{event['id']}: idle {event['idle_s']} of {event['duration_s']}, "
        f"switches {event['context_switches']}, site {site} ->"
    )


def accuracy_and_recall(calls: list[tuple[bool, bool]]) -> tuple[float, float]:
    """Of (said yes, truth) pairs: the share right, and the share of true ones said yes."""
    right = sum(said == truth for said, truth in calls)
    found = sum(said and truth for said, truth in calls)
    return right / len(calls), found / max(sum(truth for _, truth in calls), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=4, help="logs a step")
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--isolated-steps", type=int, default=0, help="first steps on restated lines alone")
    parser.add_argument("--lines-per-step", type=int, default=64)
    parser.add_argument("--first-report", type=int, default=0, help="no reports before this step but step 0")
    args = parser.parse_args()
    torch.manual_seed(0)
    base, tokenizer = load_model("smollm2-135m", "bfloat16")
    model = get_peft_model(
        base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    env = load_environment(level=1, num_train=4000, num_eval=200, prompt_style="chat")
    yes, no = (tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in (" yes", " no"))
    pad = tokenizer.pad_token_id or 0

    def encode(example):
        text = tokenizer.apply_chat_template(example.prompt, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        prompt_length, verdicts = len(ids), []
        for event in example.info["events"]:
            ids += tokenizer(restated(event), add_special_tokens=False)["input_ids"]
            verdicts.append((len(ids), low_productivity(event)))
            ids += tokenizer(" yes\n" if verdicts[-1][1] else " no\n", add_special_tokens=False)["input_ids"]
        answer = json.dumps({"selected_event_ids": example.info["gold_ids"]}) + tokenizer.eos_token
        ids += tokenizer(answer, add_special_tokens=False)["input_ids"]
        return ids, prompt_length, verdicts

    def batch(encoded):
        length = max(len(ids) for ids, _, _ in encoded)
        ids = torch.full((len(encoded), length), pad)
        labels, attention = torch.full_like(ids, -100), torch.zeros_like(ids)
        for row, (sequence, prompt_length, _) in enumerate(encoded):
            ids[row, : len(sequence)] = torch.tensor(sequence)
            attention[row, : len(sequence)] = 1
            labels[row, prompt_length : len(sequence)] = torch.tensor(sequence[prompt_length:])
        return ids, labels, attention

    def line_batch(lines):
        """Left-padded restated lines: each row's last position predicts its verdict."""
        encoded = [tokenizer(line, add_special_tokens=False)["input_ids"] for line, _ in lines]
        length = max(map(len, encoded))
        ids = torch.full((len(encoded), length), pad)
        attention = torch.zeros_like(ids)
        for row, sequence in enumerate(encoded):
            ids[row, length - len(sequence) :] = torch.tensor(sequence)
            attention[row, length - len(sequence) :] = 1
        return ids, attention

    def lines_of(examples):
        return [(restated(event), low_productivity(event)) for ex in examples for event in ex.info["events"]]

    held_out = [encode(example) for example in env.eval_examples[:HELD_OUT_LOGS]]
    events = [verdict for _, _, verdicts in held_out for _, verdict in verdicts]
    held_out_lines = lines_of(env.eval_examples)[:HELD_OUT_LINES]
    train_lines = lines_of(env.train_examples)
    random.Random(0).shuffle(train_lines)

    @torch.no_grad()
    def verdict_accuracy() -> tuple[float, float]:
        model.eval()
        calls = []  # (said yes, truth) at every verdict position
        for start in range(0, len(held_out), 8):
            chunk = held_out[start : start + 8]
            ids, _, attention = batch(chunk)
            logits = model(input_ids=ids, attention_mask=attention).logits
            for row, (_, _, verdicts) in enumerate(chunk):
                calls += [
                    (bool(logits[row, at - 1, yes] > logits[row, at - 1, no]), truth)
                    for at, truth in verdicts
                ]
        model.train()
        return accuracy_and_recall(calls)

    @torch.no_grad()
    def line_accuracy() -> tuple[float, float]:
        model.eval()
        calls = []
        for start in range(0, len(held_out_lines), 100):
            chunk = held_out_lines[start : start + 100]
            ids, attention = line_batch(chunk)
            last = model(input_ids=ids, attention_mask=attention).logits[:, -1]
            calls += zip((last[:, yes] > last[:, no]).tolist(), [truth for _, truth in chunk], strict=True)
        model.train()
        return accuracy_and_recall(calls)

    def report(step: int, loss: float | None, started: float) -> None:
        accuracy, recall = verdict_accuracy()
        parts = [f"step {step}:"] + ([f"loss {loss:.4f},"] if loss is not None else [])
        if args.isolated_steps:
            alone, alone_recall = line_accuracy()
            parts.append(f"lines alone {alone:.3f} (yes-recall {alone_recall:.3f}),")
        parts.append(f"verdicts in the log {accuracy:.3f} (yes-recall {recall:.3f})")
        print(" ".join(parts) + f" ({time.time() - started:.0f} s)", flush=True)

    def loss_of_step(step: int) -> torch.Tensor:
        if step <= args.isolated_steps:
            first = step * args.lines_per_step
            lines = [train_lines[(first + i) % len(train_lines)] for i in range(args.lines_per_step)]
            ids, attention = line_batch(lines)
            last = model(input_ids=ids, attention_mask=attention).logits[:, -1].float()
            targets = torch.tensor([yes if truth else no for _, truth in lines])
            return torch.nn.functional.cross_entropy(last, targets)
        first = (step - args.isolated_steps) * args.batch_size
        rows = [
            encode(env.train_examples[(first + i) % len(env.train_examples)]) for i in range(args.batch_size)
        ]
        ids, labels, attention = batch(rows)
        return model(input_ids=ids, attention_mask=attention, labels=labels).loss

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate)
    started = time.time()
    majority = 1 - sum(events) / len(events)
    print(f"{len(events)} held-out events in {HELD_OUT_LOGS} logs, always 'no' scores {majority:.3f}")
    if args.isolated_steps:
        lines_majority = 1 - sum(t for _, t in held_out_lines) / len(held_out_lines)
        print(f"{len(held_out_lines)} held-out lines alone, always 'no' scores {lines_majority:.3f}")
    report(0, None, started)
    model.train()
    for step in range(1, args.steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = args.learning_rate * min(1.0, step / 5)
        loss = loss_of_step(step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if step % args.every == 0 and step >= args.first_report:
            report(step, loss.item(), started)


if __name__ == "__main__":
    main()
