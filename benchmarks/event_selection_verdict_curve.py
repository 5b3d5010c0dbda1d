"""How fast SmolLM2-135M learns event_selection's rule by SFT: a learning curve of its per-event verdicts.

    rewardlab models fetch smollm2-135m      # once
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/event_selection_verdict_curve.py --steps 200 --every 20

A diagnostic, not a training recipe. Each demonstration restates every event of a level-1 log (its idle and
duration seconds, its context switches, a distracting site or "none") and ends the line with the rule's
verdict, then gives the JSON answer::

    e03: idle 581 of 620, switches 1, site none -> yes

LoRA (rank 16, all linear layers, float32 adapters over the bfloat16 model) trains on these with AdamW at a
constant learning rate after 5 warmup steps. Every ``--every`` steps the verdicts of 40 held-out logs are read
teacher-forced: at each verdict position, whether " yes" outscores " no". That separates deciding from
copying: the restating is learned in a few steps, and what remains is whether the model can map an event's
numbers to the rule. Prints verdict accuracy (against always answering "no") and recall of the "yes" events.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from peft import LoraConfig, get_peft_model

from rewardlab.envs.builtin.event_selection import DISTRACTING_SITES, load_environment, low_productivity
from rewardlab.models.loading import load_model

HELD_OUT_LOGS = 40


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--every", type=int, default=20)
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

    def encode(example):
        text = tokenizer.apply_chat_template(example.prompt, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        prompt_length, verdicts = len(ids), []
        for event in example.info["events"]:
            site = next((s for s in DISTRACTING_SITES if s in event["title"]), "none")
            line = (
                f"{event['id']}: idle {event['idle_s']} of {event['duration_s']}, "
                f"switches {event['context_switches']}, site {site} ->"
            )
            ids += tokenizer(line, add_special_tokens=False)["input_ids"]
            verdicts.append((len(ids), low_productivity(event)))
            ids += tokenizer(" yes\n" if verdicts[-1][1] else " no\n", add_special_tokens=False)["input_ids"]
        answer = json.dumps({"selected_event_ids": example.info["gold_ids"]}) + tokenizer.eos_token
        ids += tokenizer(answer, add_special_tokens=False)["input_ids"]
        return ids, prompt_length, verdicts

    def batch(encoded):
        length = max(len(ids) for ids, _, _ in encoded)
        ids = torch.full((len(encoded), length), tokenizer.pad_token_id or 0)
        labels, attention = torch.full_like(ids, -100), torch.zeros_like(ids)
        for row, (sequence, prompt_length, _) in enumerate(encoded):
            ids[row, : len(sequence)] = torch.tensor(sequence)
            attention[row, : len(sequence)] = 1
            labels[row, prompt_length : len(sequence)] = torch.tensor(sequence[prompt_length:])
        return ids, labels, attention

    held_out = [encode(example) for example in env.eval_examples[:HELD_OUT_LOGS]]
    events = [verdict for _, _, verdicts in held_out for _, verdict in verdicts]
    majority = 1 - sum(events) / len(events)

    @torch.no_grad()
    def verdict_accuracy() -> tuple[float, float]:
        model.eval()
        right, found = 0, 0
        for start in range(0, len(held_out), 8):
            chunk = held_out[start : start + 8]
            ids, _, attention = batch(chunk)
            logits = model(input_ids=ids, attention_mask=attention).logits
            for row, (_, _, verdicts) in enumerate(chunk):
                for position, truth in verdicts:
                    said_yes = bool(logits[row, position - 1, yes] > logits[row, position - 1, no])
                    right += said_yes == truth
                    found += said_yes and truth
        model.train()
        return right / len(events), found / max(sum(events), 1)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate)
    started = time.time()
    accuracy, recall = verdict_accuracy()
    print(f"{len(events)} held-out events, always 'no' scores {majority:.3f}")
    print(f"step 0: verdict accuracy {accuracy:.3f}, yes-recall {recall:.3f}", flush=True)
    model.train()
    for step in range(1, args.steps + 1):
        first = step * args.batch_size
        rows = [
            encode(env.train_examples[(first + i) % len(env.train_examples)]) for i in range(args.batch_size)
        ]
        ids, labels, attention = batch(rows)
        for group in optimizer.param_groups:
            group["lr"] = args.learning_rate * min(1.0, step / 5)
        loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if step % args.every == 0:
            accuracy, recall = verdict_accuracy()
            print(
                f"step {step}: loss {loss.item():.4f}, verdict accuracy {accuracy:.3f}, "
                f"yes-recall {recall:.3f} ({time.time() - started:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
