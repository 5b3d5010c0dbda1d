"""Continuous batching and batched LoRA, at the engine: rows join and leave a running batch at each step.

The engine runs on an event loop of the test's own (``asyncio.run``), with the tiny model and two LoRA
adapters that answer differently; the answers are held to the batch-at-a-time sampler's at temperature 0, and
the scheduling is observed through the engine's steps (which prefill and decoding steps ran, in what order),
never through timings.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from rewardlab.models.lean import KVCache, attention_mask
from rewardlab.models.routed_lora import routed_decoder
from rewardlab.sampling.base import Prompt, SamplingParams
from rewardlab.serve import build_engine
from test_serve import make_adapter

MESSAGES = [{"role": "user", "content": "12+7="}]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("continuous")
    return {"one": make_adapter(tmp / "one", seed=1), "two": make_adapter(tmp / "two", seed=2)}


@pytest.fixture
def engine(adapters):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    built = build_engine("tiny", adapters, max_batch_size=8, prefill_chunk=16)
    assert built.scheduler == "continuous"
    yield built
    torch.set_num_threads(threads)


def running(engine, scenario):
    """Run ``scenario()`` (a coroutine function) with ``engine`` started on this loop."""

    async def main():
        engine.start()
        try:
            return await asyncio.wait_for(scenario(), 120)
        finally:
            await engine.stop()

    return asyncio.run(main())


def ask(engine, model="tiny", prompt=None, n=1, temperature=0.0, max_tokens=8, seed=None, **extra):
    prompt = prompt if prompt is not None else engine.sampler.renderer.prompt_ids(MESSAGES)
    return engine.submit(model, [prompt], n, temperature, 1.0, max_tokens, [], seed, **extra)


def texts(job) -> list[str]:
    return [generation.text for generation in job.future.result()]


def static_greedy(engine, model: str, prompt: list[int], max_tokens: int, **params) -> str:
    """The batch-at-a-time sampler's completion (routed to ``model``'s adapter as the static engine does)."""
    sampling = SamplingParams(temperature=0, max_new_tokens=max_tokens, **params)
    adapter = engine.models.adapter_of(model)
    groups = engine.router.generate(engine.models.model, [Prompt([], token_ids=prompt)], [adapter], sampling)
    return groups[0][0].text


def no_stop(engine) -> dict[int, float]:
    """A logit bias that keeps rows from ever choosing a stop token: they run to max_tokens."""
    return {token: -100.0 for token in engine.sampler.stop_ids}


def test_rows_on_different_adapters_in_one_forward_match_each_adapter_alone(adapters):
    engine = build_engine("tiny", adapters, scheduler="static")
    model = engine.models.model
    names = [None, *sorted(a for a in engine.models.routes.values() if a)]
    decoder, routing = routed_decoder(model, names)
    ids = torch.tensor([engine.sampler.renderer.prompt_ids(MESSAGES)] * 4)
    rows = [0, 1, 2, 1]

    def logits(adapter_rows: list[int]) -> torch.Tensor:
        routing.route(adapter_rows, ids.device)
        cache = KVCache.allocate(decoder, len(adapter_rows), ids.shape[1], like=decoder.embed)
        mask = attention_mask(torch.ones(len(adapter_rows), ids.shape[1], dtype=torch.bool), 0)
        hidden = decoder.forward(ids[: len(adapter_rows)], torch.arange(ids.shape[1])[None], mask, cache)
        return decoder.logits(hidden[:, -1])

    with torch.no_grad():
        mixed = logits(rows)
        for row, adapter in enumerate(rows):
            if names[adapter] is None:
                with model.disable_adapter():
                    expected = model(ids[:1]).logits[0, -1]
            else:
                model.set_adapter(names[adapter])
                expected = model(ids[:1]).logits[0, -1]
            torch.testing.assert_close(mixed[row], expected, atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(logits([adapter])[0], expected, atol=2e-5, rtol=1e-4)
    assert not torch.allclose(mixed[0], mixed[1]) and not torch.allclose(mixed[1], mixed[2])


def test_a_short_request_joins_and_leaves_while_a_heavy_one_runs(engine):
    async def scenario():
        heavy = ask(engine, n=4, temperature=1.0, max_tokens=120, logit_bias=no_stop(engine))
        while engine.metrics.decode_steps < 5:  # the heavy rows are decoding
            await asyncio.sleep(0.005)
        short = ask(engine, model="one", max_tokens=4)
        await short.future
        assert not heavy.future.done()  # answered while the heavy request still runs
        await heavy.future
        return heavy, short

    heavy, short = running(engine, scenario)
    assert [len(g.token_ids) for g in heavy.future.result()] == [120] * 4
    assert engine.metrics.joined_running >= 1
    assert engine.metrics.mixed_batches >= 1  # base and adapter rows shared decoding steps
    prompt = engine.sampler.renderer.prompt_ids(MESSAGES)
    assert texts(short) == [static_greedy(engine, "one", prompt, 4)]


def test_temperature_zero_answers_are_the_same_alone_and_in_a_busy_mixed_batch(engine):
    renderer = engine.sampler.renderer
    prompts = [renderer.prompt_ids([{"role": "user", "content": f"{a}+{a * 3}="}]) for a in range(6)]
    models = ["tiny", "one", "two"]
    alone = {(m, i): static_greedy(engine, m, p, 10) for m in models for i, p in enumerate(prompts)}

    async def scenario():
        jobs = {}
        for i, prompt in enumerate(prompts):
            for m in models:
                # Noise between them: sampled rows of other lengths, penalties and seeds on other adapters.
                ask(engine, model=models[i % 3], n=2, temperature=1.0, max_tokens=3 + 5 * i, seed=i)
                ask(engine, model=models[(i + 1) % 3], temperature=0.8, max_tokens=20, presence_penalty=1.0)
                jobs[(m, i)] = ask(engine, model=m, prompt=prompt, max_tokens=10)
        await asyncio.gather(*(job.future for job in jobs.values()))
        return jobs

    jobs = running(engine, scenario)
    assert {key: texts(job)[0] for key, job in jobs.items()} == alone
    assert engine.metrics.largest_batch == 8 and engine.metrics.joined_running > 0


def test_a_seeded_request_samples_the_same_whatever_runs_beside_it(engine):
    def seeded(traffic: int):
        async def scenario():
            for k in range(traffic):
                ask(engine, model=["one", "two"][k % 2], n=2, temperature=1.0, max_tokens=5 + k)
            job = ask(engine, model="one", n=3, temperature=1.0, max_tokens=16, seed=1234)
            await job.future
            return texts(job)

        return running(engine, scenario)

    quiet = seeded(0)
    assert seeded(6) == quiet and seeded(3) == quiet
    assert len(set(quiet)) > 1  # the three rows draw from different generators


def test_a_long_prompt_is_prefilled_a_chunk_at_a_time_between_decoding_steps(engine, monkeypatch):
    events: list[tuple] = []
    sliced, decode = engine._prefilled_slice, engine._decode

    def log_slice(batch, width, start, end, *rest):
        events.append(("prefill", end - start))
        return sliced(batch, width, start, end, *rest)

    monkeypatch.setattr(engine, "_prefilled_slice", log_slice)
    monkeypatch.setattr(engine, "_decode", lambda tokens: events.append(("decode",)) or decode(tokens))
    long_prompt = engine.models.tokenizer("3+4=" * 20)["input_ids"]  # 80 tokens: 5 chunks of 16

    async def scenario():
        running_rows = ask(engine, temperature=1.0, max_tokens=60, logit_bias=no_stop(engine))
        while engine.metrics.decode_steps < 3:
            await asyncio.sleep(0.005)
        events.append(("long arrives",))
        job = ask(engine, model="two", prompt=long_prompt, max_tokens=6)
        await asyncio.gather(job.future, running_rows.future)
        return job

    job = running(engine, scenario)
    assert texts(job) == [static_greedy(engine, "two", long_prompt, 6)]
    after = events[events.index(("long arrives",)) :]
    chunks = [i for i, event in enumerate(after) if event[0] == "prefill"]
    assert [after[i][1] for i in chunks] == [16] * 5
    # Between two chunks the running row takes a decoding step: a long prompt never stalls it for longer.
    assert all(("decode",) in after[a:b] for a, b in zip(chunks, chunks[1:], strict=False))


def test_sampling_parameters_stay_with_their_own_rows(engine):
    prompt = engine.sampler.renderer.prompt_ids(MESSAGES)
    letter = engine.models.tokenizer.convert_tokens_to_ids("q")
    penalties = {"presence_penalty": 1.5, "frequency_penalty": 0.5}

    async def scenario():
        plain = ask(engine, max_tokens=12)
        penalised = ask(engine, max_tokens=12, **penalties)
        biased = ask(engine, model="one", max_tokens=5, logit_bias={letter: 100.0})
        stopped = engine.submit("tiny", [prompt], 1, 0.0, 1.0, 12, ["1"], None)
        listed = ask(engine, model="two", max_tokens=6, logprobs=True, top_logprobs=3)
        await asyncio.gather(*(j.future for j in (plain, penalised, biased, stopped, listed)))
        return plain, penalised, biased, stopped, listed

    plain, penalised, biased, stopped, listed = running(engine, scenario)
    assert texts(plain) == [static_greedy(engine, "tiny", prompt, 12)]
    assert texts(penalised) == [static_greedy(engine, "tiny", prompt, 12, **penalties)] != texts(plain)
    assert texts(biased) == ["qqqqq"]
    assert texts(stopped) == [static_greedy(engine, "tiny", prompt, 12, stop=["1"])]
    generation = listed.future.result()[0]
    assert len(generation.logprobs) == len(generation.token_ids) == len(generation.top_logprobs)
    assert all(len(top) == 3 and top[0][1] >= top[-1][1] for top in generation.top_logprobs)


def test_more_rows_than_the_batch_holds_wait_for_free_slots(engine):
    async def scenario():
        jobs = [
            ask(engine, model=["tiny", "one"][k % 2], n=3, temperature=1.0, max_tokens=4 + k)
            for k in range(6)
        ]
        big = ask(engine, n=20, temperature=1.0, max_tokens=3)  # n beyond the batch: placed as slots free
        await asyncio.gather(*(j.future for j in [*jobs, big]))
        return jobs, big

    jobs, big = running(engine, scenario)
    assert [len(j.future.result()) for j in jobs] == [3] * 6 and len(big.future.result()) == 20
    assert engine.metrics.largest_batch == 8
    assert engine.metrics.completions == 38


def test_a_cancelled_request_leaves_at_the_next_step(engine):
    async def scenario():
        doomed = ask(engine, n=4, temperature=1.0, max_tokens=200, logit_bias=no_stop(engine))
        while engine.metrics.decode_steps < 3:
            await asyncio.sleep(0.005)
        doomed.future.cancel()
        steps = engine.metrics.decode_steps
        after = ask(engine, max_tokens=4)
        await after.future
        return steps

    steps = running(engine, scenario)
    assert engine.metrics.completion_tokens < 4 * 50  # the cancelled rows stopped long before 200 tokens
    assert engine.metrics.decode_steps - steps < 20


def test_an_adapter_unloaded_while_its_rows_run_fails_them_and_the_rest_go_on(engine):
    from rewardlab.serve.errors import UnknownModelError

    async def scenario():
        victim = ask(engine, model="two", temperature=1.0, max_tokens=100, logit_bias=no_stop(engine))
        bystander = ask(engine, model="one", max_tokens=30, logit_bias=no_stop(engine))
        while engine.metrics.decode_steps < 3:
            await asyncio.sleep(0.005)
        await engine.unload_adapter("two")
        with pytest.raises(UnknownModelError):
            await victim.future
        await bystander.future
        after = ask(engine, model="one", max_tokens=4)
        await after.future
        return bystander, after

    bystander, after = running(engine, scenario)
    prompt = engine.sampler.renderer.prompt_ids(MESSAGES)
    assert texts(after) == [static_greedy(engine, "one", prompt, 4)]
    assert len(bystander.future.result()[0].token_ids) == 30


def test_decoding_rows_and_a_prefill_in_one_forward_compute_what_they_compute_apart(adapters):
    from rewardlab.serve.slots import SlotCache

    engine = build_engine("tiny", adapters, scheduler="static")
    names = [None, *sorted(a for a in engine.models.routes.values() if a)]
    decoder, routing = routed_decoder(engine.models.model, names)
    prompt = torch.tensor([engine.sampler.renderer.prompt_ids(MESSAGES)] * 2)
    width = prompt.shape[1]

    def segments():
        """Three decoding rows (base and both adapters) at their own lengths, and a prompt of two rows."""
        torch.manual_seed(0)  # the same earlier keys and values each time
        slots = SlotCache(decoder)
        slots.reserve(3, 16)
        for layer in range(len(decoder.layers)):
            slots.keys[layer].normal_()
            slots.values[layer].normal_()
        lengths = torch.tensor([3, 7, 5])
        step = slots.step(lengths)
        decoding = (torch.tensor([[5], [9], [11]]), lengths[:, None], step.mask(), step)
        staging = KVCache.allocate(decoder, 2, width, like=decoder.embed)
        mask = attention_mask(torch.ones(2, width, dtype=torch.bool), 0)
        return decoding, (prompt, torch.arange(width).expand(2, -1), mask, staging)

    with torch.no_grad():
        decoding, prefill = segments()
        routing.route([0, 1, 2], prompt.device)
        alone_decoding = decoder.forward(*decoding)
        routing.route([2, 1], prompt.device)
        alone_prefill = decoder.forward(*prefill)
        decoding, prefill = segments()
        routing.route([0, 1, 2] + [2] * width + [1] * width, prompt.device)
        together = decoder.forward_together([decoding, prefill])
    torch.testing.assert_close(together[0], alone_decoding, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(together[1], alone_prefill, atol=2e-5, rtol=1e-4)


def test_a_dora_adapter_loaded_at_runtime_is_refused_naming_the_static_scheduler(engine, tmp_path):
    from peft import LoraConfig, get_peft_model

    from rewardlab.models import load_model
    from rewardlab.serve.errors import AdapterError

    base, _ = load_model("tiny")
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], use_dora=True)).save_pretrained(
        tmp_path / "dora"
    )

    async def scenario():
        with pytest.raises(AdapterError) as refused:
            await engine.load_adapter("dora", str(tmp_path / "dora"))
        after = ask(engine, model="one", max_tokens=4)  # the engine serves on, its adapters unchanged
        await after.future
        return str(refused.value), after

    message, after = running(engine, scenario)
    assert (
        "continuous batching" in message
        and "--scheduler static" in message
        and len(message.splitlines()) == 1
    )
    assert "dora" not in engine.models.names
    prompt = engine.sampler.renderer.prompt_ids(MESSAGES)
    assert texts(after) == [static_greedy(engine, "one", prompt, 4)]
