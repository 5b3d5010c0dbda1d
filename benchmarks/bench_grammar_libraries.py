"""Grammar-constrained decoding libraries side by side: xgrammar, llguidance and outlines-core.

    .venv/bin/python benchmarks/bench_grammar_libraries.py [--model tiny --model smollm2-135m]
        [--samples 16] [--batch 8] [--max-tokens 160]

Each library constrains the same decoding loop: the model's own forward (prefill once, one decoding step
per token, temperature 1, a seed per sample batch), the library's token mask written into one int32 bitmask
per row, applied to the logits by the same torch code, the sampled token handed back to the library. Timed
per step, apart from the forward: filling the masks, applying them, and advancing the matchers; divided by
the rows still generating, that is the overhead per generated token. Also timed: building the library's view
of the tokenizer (once per tokenizer) and compiling each schema (once per schema). Correctness: every
completion that ended on a stop token must parse and validate against its schema (jsonschema); completions
cut at ``--max-tokens`` are counted apart, and a probe (not timed) counts the steps at which a library's mask
let a special token other than a stop token through. Every library gets the same seeds, so the random streams
agree until the masks first differ. Last, each library replays the tokens of one document a trained model
might write (``DOCUMENT``, under the flat schema): the mask cost on ordinary text rather than an untrained
model's noise.

The libraries use compact JSON (no free whitespace: a random model would otherwise spend its tokens on
spaces). outlines-core takes one end-of-sequence token only, the tokenizer's ``eos_token``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jsonschema
import torch

from rewardlab.models.chat import ChatRenderer
from rewardlab.models.forward import forward_for
from rewardlab.models.loading import load_model
from rewardlab.sampling.structured import tokenizer_info

SCHEMAS: dict[str, dict] = {
    # What client.chat.completions.parse sends for a small pydantic model (strict), with bounds.
    "flat": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 16},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "member": {"type": "boolean"},
            "level": {"type": "string", "enum": ["low", "mid", "high"]},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b", "c"]}, "maxItems": 3},
        },
        "required": ["name", "age", "member", "level", "tags"],
        "additionalProperties": False,
    },
    "nested": {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "minItems": 1,
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "ok": {"type": "boolean"},
                        "note": {"anyOf": [{"type": "string", "maxLength": 8}, {"type": "null"}]},
                    },
                    "required": ["id", "ok", "note"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["items"],
        "additionalProperties": False,
    },
    # json_object: any object.
    "object": {"type": "object"},
}

PROMPT = [{"role": "user", "content": "Describe a person as JSON."}]


def token_bytes(tokenizer) -> dict[int, bytes]:
    """Each ordinary token's bytes (byte-level BPE or plain strings), for libraries that take a vocabulary."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    decoder = json.loads(tokenizer.backend_tokenizer.to_str()).get("decoder") or {}
    byte_level = decoder.get("type") == "ByteLevel"
    unbyte = {c: b for b, c in bytes_to_unicode().items()}
    special = set(tokenizer.all_special_ids)
    special |= {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    out = {}
    for token, index in tokenizer.get_vocab().items():
        if index in special:
            continue
        out[index] = bytes(unbyte[c] for c in token) if byte_level else token.encode()
    return out


class XGrammar:
    """xgrammar with the special tokens left out of its vocabulary, as rewardlab uses it."""

    name = "xgrammar"

    def __init__(self, tokenizer, vocab_size: int, stop_ids: list[int]):
        import xgrammar as xg

        self.vocab_size = vocab_size
        self.xg = xg
        info = self.tokenizer_info(tokenizer, vocab_size, stop_ids)
        self.compiler = xg.GrammarCompiler(info, max_threads=1, cache_enabled=False)

    @staticmethod
    def tokenizer_info(tokenizer, vocab_size: int, stop_ids: list[int]):
        return tokenizer_info(tokenizer, vocab_size, stop_ids)

    def compile(self, schema: dict):
        return self.compiler.compile_json_schema(
            json.dumps(schema), any_whitespace=False, separators=(",", ":")
        )

    def matcher(self, compiled):
        return self.xg.GrammarMatcher(compiled)

    def fill(self, matcher, bitmask: torch.Tensor, row: int) -> None:
        matcher.fill_next_token_bitmask(bitmask, row)

    def accept(self, matcher, token: int) -> bool:
        return matcher.accept_token(token)


class XGrammarAsDetected(XGrammar):
    """xgrammar's own reading of a Hugging Face tokenizer (special tokens become their names as text)."""

    name = "xgrammar-hf"

    @staticmethod
    def tokenizer_info(tokenizer, vocab_size: int, stop_ids: list[int]):
        import xgrammar as xg

        return xg.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=stop_ids)


class ByteTokenizer:
    """What llguidance's ``TokenizerWrapper`` reads: every token's bytes, the special ids, an encoder."""

    def __init__(self, tokenizer, vocab_size: int):
        ordinary = token_bytes(tokenizer)
        self.tokens = [
            ordinary.get(i, (tokenizer.convert_ids_to_tokens(i) or "").encode()) for i in range(vocab_size)
        ]
        self.special_token_ids = [i for i in range(vocab_size) if i not in ordinary]
        self.eos_token_id = tokenizer.eos_token_id
        self.bos_token_id = tokenizer.bos_token_id
        self._tokenizer = tokenizer

    def __call__(self, text: str) -> list[int]:
        return self._tokenizer(text, add_special_tokens=False)["input_ids"]


class LLGuidance:
    name = "llguidance"

    def __init__(self, tokenizer, vocab_size: int, stop_ids: list[int]):
        import llguidance
        import llguidance.hf

        self.vocab_size = vocab_size
        self.ll = llguidance
        try:
            self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=stop_ids)
        except ValueError:  # a decoder it does not know (the tiny models' Fuse): hand it the token bytes
            wrapper = llguidance.TokenizerWrapper(ByteTokenizer(tokenizer, vocab_size))
            self.tokenizer = llguidance.LLTokenizer(wrapper, n_vocab=vocab_size, eos_token=stop_ids)

    def compile(self, schema: dict):
        grammar = self.ll.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
        error = self.ll.LLMatcher.validate_grammar(grammar, self.tokenizer)
        if error:
            raise ValueError(error)
        return grammar

    def matcher(self, compiled):
        return self.ll.LLMatcher(self.tokenizer, compiled, log_level=0)

    def fill(self, matcher, bitmask: torch.Tensor, row: int) -> None:
        view = bitmask[row]
        matcher.unsafe_compute_mask_ptr(view.data_ptr(), view.numel() * 4)

    def accept(self, matcher, token: int) -> bool:
        return matcher.consume_token(token)


class OutlinesCore:
    name = "outlines-core"

    def __init__(self, tokenizer, vocab_size: int, stop_ids: list[int]):
        import outlines_core

        self.vocab_size = vocab_size
        self.oc = outlines_core
        self.eos = eos = tokenizer.eos_token_id
        mapping: dict[bytes, list[int]] = {}
        for index, raw in token_bytes(tokenizer).items():
            if index < vocab_size and index != eos:
                mapping.setdefault(raw, []).append(index)
        self.vocabulary = outlines_core.Vocabulary(eos, mapping)

    def compile(self, schema: dict):
        regex = self.oc.json_schema.build_regex_from_schema(json.dumps(schema), whitespace_pattern="")
        return self.oc.Index(regex, self.vocabulary)

    def matcher(self, compiled):
        return self.oc.Guide(compiled)

    def fill(self, matcher, bitmask: torch.Tensor, row: int) -> None:
        view = bitmask[row]
        matcher.write_mask_into(view.data_ptr(), view.numel(), 4)

    def accept(self, matcher, token: int) -> bool:
        if token == self.eos:  # the mask allowed it: the guide is in a final state, and stays there
            return True
        try:
            matcher.advance(token, return_tokens=False)
        except ValueError:
            return False
        return True


LIBRARIES = {cls.name: cls for cls in (XGrammar, XGrammarAsDetected, LLGuidance, OutlinesCore)}
DEFAULT_LIBRARIES = ["llguidance", "outlines-core", "xgrammar"]


def apply_bitmask(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    """Disallowed tokens (bit 0) to -inf, in place; the same code for every library."""
    bits = torch.bitwise_right_shift(bitmask[:, :, None], torch.arange(32, dtype=torch.int32)) & 1
    allowed = bits.bool().view(bitmask.shape[0], -1)[:, : logits.shape[1]]
    logits.masked_fill_(~allowed, float("-inf"))


@torch.inference_mode()
def run(library, compiled, forward, prompt_ids, stop_ids, batch, max_tokens, seed, vocab_size, specials):
    """One batch of ``batch`` constrained completions: (ids, finished, seconds in the library, seconds
    applying masks, row-steps, row-steps whose mask allowed a special token other than a stop token)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.tensor([prompt_ids] * batch)
    logits, state = forward.prefill(ids, torch.ones_like(ids), max_tokens)
    matchers = [library.matcher(compiled) for _ in range(batch)]
    bitmask = torch.full((batch, (vocab_size + 31) // 32), -1, dtype=torch.int32)
    finished = [False] * batch
    out: list[list[int]] = [[] for _ in range(batch)]
    spent, applying, row_steps, leaks = 0.0, 0.0, 0, 0
    stops = set(stop_ids)
    probe = torch.tensor([i for i in specials if i not in stops], dtype=torch.long)
    for _ in range(max_tokens):
        started = time.perf_counter()
        logits = logits.float()
        for row in range(batch):
            if not finished[row]:
                library.fill(matchers[row], bitmask, row)
        masked = time.perf_counter()
        apply_bitmask(logits, bitmask)
        applying += time.perf_counter() - masked
        spent += masked - started
        if len(probe):  # not timed: does any live row's mask let a special token through?
            leaks += int(torch.isfinite(logits[:, probe]).any(-1)[~torch.tensor(finished)].sum())
        probs = torch.softmax(logits, -1)
        probs[torch.tensor(finished)] = 1.0  # finished rows: anything, ignored
        token = torch.multinomial(probs, 1, generator=generator)[:, 0]
        started = time.perf_counter()
        for row, value in enumerate(token.tolist()):
            if finished[row]:
                continue
            row_steps += 1
            if not library.accept(matchers[row], value):
                raise RuntimeError(f"{library.name} refused token {value} that its own mask allowed")
            out[row].append(value)
            finished[row] = value in stops
        spent += time.perf_counter() - started
        if all(finished):
            break
        logits = forward.decode(state, token)
    return out, finished, spent, applying, row_steps, leaks


# A document the flat schema accepts, as a model that had learnt the format would write it.
DOCUMENT = {"name": "John Smith", "age": 42, "member": True, "level": "mid", "tags": ["a", "b"]}


def replay(library, compiled, tokenizer, stop_ids, batch: int, repeats: int = 5) -> float:
    """µs per row-token to fill the masks for, and advance ``batch`` matchers through, the tokens of
    ``DOCUMENT`` and a stop token: the library's cost on text a trained model writes, without sampling."""
    ids = tokenizer(json.dumps(DOCUMENT, separators=(",", ":")), add_special_tokens=False)["input_ids"]
    ids.append(stop_ids[-1])
    bitmask = torch.full((batch, (library.vocab_size + 31) // 32), -1, dtype=torch.int32)
    best = float("inf")
    for _ in range(repeats):
        matchers = [library.matcher(compiled) for _ in range(batch)]
        started = time.perf_counter()
        for token in ids:
            for row, matcher in enumerate(matchers):
                library.fill(matcher, bitmask, row)
                if not library.accept(matcher, token):
                    raise RuntimeError(f"{library.name} refused token {token} of the document")
        best = min(best, time.perf_counter() - started)
    return best / (len(ids) * batch) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="tiny, smollm2-135m, ... (repeatable)")
    parser.add_argument("--library", action="append", choices=sorted(LIBRARIES))
    parser.add_argument("--schema", action="append", choices=sorted(SCHEMAS))
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=160)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, replays = [], []
    for model_name in args.model or ["tiny", "smollm2-135m"]:
        model, tokenizer = load_model(model_name)
        renderer = ChatRenderer(tokenizer)
        stop_ids = sorted(renderer.stop_token_ids)
        vocab_size = model.config.vocab_size
        forward = forward_for(model)
        prompt_ids = renderer.prompt_ids(PROMPT)
        specials = set(tokenizer.all_special_ids)
        specials |= {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
        for library_name in args.library or DEFAULT_LIBRARIES:
            started = time.perf_counter()
            library = LIBRARIES[library_name](tokenizer, vocab_size, stop_ids)
            setup = time.perf_counter() - started
            for schema_name in args.schema or list(SCHEMAS):
                schema = SCHEMAS[schema_name]
                started = time.perf_counter()
                try:
                    compiled = library.compile(schema)
                except Exception as error:  # a library that cannot compile it: a row that says so
                    rows.append((model_name, library_name, schema_name, setup, None, str(error)[:60]))
                    continue
                compile_s = time.perf_counter() - started
                spent, applying, steps, valid, invalid, cut, lengths, leaks = 0.0, 0.0, 0, 0, 0, 0, [], 0
                with forward.sampling():
                    for seed in range(0, args.samples, args.batch):
                        out, finished, seconds, apply_s, row_steps, leaked = run(
                            library, compiled, forward, prompt_ids, stop_ids,
                            min(args.batch, args.samples - seed), args.max_tokens, seed, vocab_size, specials,
                        )  # fmt: skip
                        leaks += leaked
                        spent += seconds
                        applying += apply_s
                        steps += row_steps
                        for ids, done in zip(out, finished, strict=True):
                            lengths.append(len(ids))
                            if not done:
                                cut += 1
                                continue
                            text = tokenizer.decode(ids, skip_special_tokens=True)
                            try:
                                jsonschema.validate(json.loads(text), schema)
                                valid += 1
                            except (ValueError, jsonschema.ValidationError):
                                invalid += 1
                                print(f"  invalid ({library_name}, {schema_name}): {text!r}")
                result = f"{valid} valid, {invalid} invalid, {cut} cut"
                result += f"; special tokens allowed at {leaks} of {steps} steps" if leaks else ""
                rows.append(
                    (model_name, library_name, schema_name, setup, compile_s, result,
                     spent / max(steps, 1) * 1e6, applying / max(steps, 1) * 1e6, statistics.mean(lengths))
                )  # fmt: skip
                print(rows[-1], flush=True)
                if schema_name == "flat":
                    replays.append((model_name, library_name, replay(library, compiled, tokenizer, stop_ids,
                                                                     args.batch)))  # fmt: skip
    print(
        f"\n{args.samples} samples per cell, batch {args.batch}, at most {args.max_tokens} tokens, 1 thread"
    )
    print("| model | library | schema | tokenizer setup (s) | compile (ms) | library µs/token | "
          "applying µs/token | mean tokens | completions |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        if row[4] is None:
            print(f"| {row[0]} | {row[1]} | {row[2]} | {row[3]:.2f} | failed | | | | {row[5]} |")
            continue
        model_name, library_name, schema_name, setup, compile_s, result, library_us, apply_us, mean_len = row
        print(
            f"| {model_name} | {library_name} | {schema_name} | {setup:.2f} | {compile_s * 1e3:.0f} | "
            f"{library_us:.0f} | {apply_us:.0f} | {mean_len:.0f} | {result} |"
        )
    print(
        f"\nreplaying {json.dumps(DOCUMENT, separators=(',', ':'))} under the flat schema, {args.batch} rows"
    )
    print("| model | library | library µs/token |")
    print("|---|---|---:|")
    for model_name, library_name, per_token_us in replays:
        print(f"| {model_name} | {library_name} | {per_token_us:.1f} |")


if __name__ == "__main__":
    main()
