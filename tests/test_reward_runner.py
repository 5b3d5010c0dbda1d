"""The isolated reward runner: a reward function that hangs, raises or kills its worker errors only its
own component on its own rollout; the pool replaces the worker and goes on."""

import ctypes
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest

from rewardlab.envs.registry import load_environment
from rewardlab.errors import RewardlabError
from rewardlab.rubrics import Rubric, XMLParser
from rewardlab.rubrics.runner import RewardCallError, RewardRunner, pack_arguments, shared_runner, ship
from rewardlab.types import Example, Rollout

pytestmark = pytest.mark.skipif(os.name != "posix", reason="reward worker processes need POSIX pipes")

FAILURE_WORKERS = 3  # a pool of its own, so these tests can count its workers


def rollout(text: str, info=None, state=None, mask=None) -> Rollout:
    example = Example("e1", [{"role": "user", "content": "say something"}], "4", info or {})
    completion = [{"role": "assistant", "content": text}]
    return Rollout(example, 0, completion, state=state or {}, completion_mask=mask)


def misbehave(completion: str) -> float:
    """The length of the completion, unless the completion asks for trouble."""
    if completion == "hang":
        time.sleep(1e6)
    if completion == "spin":
        while True:
            pass
    if completion == "raise":
        raise ValueError("asked to raise")
    if completion == "exit":
        os._exit(1)
    if completion == "segfault":
        ctypes.string_at(0)
    if completion == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    return float(len(completion))


def steady(completion: str) -> float:
    return 1.0


def worker_pid(completion: str) -> float:
    return float(os.getpid())


def nap(info) -> float:
    time.sleep(info["seconds"])
    return 1.0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # an orphan nobody reaped yet is a zombie: gone, only its entry is left
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(
    "mode, reason",
    [
        ("hang", "timed out after 1.0s"),
        ("spin", "timed out after 1.0s"),
        ("raise", "ValueError: asked to raise"),
        ("exit", "worker died (exit code 1)"),
        ("segfault", "worker died (exit code -11, SIGSEGV)"),
        ("sigkill", "worker died (exit code -9, SIGKILL)"),
    ],
)
def test_a_misbehaving_call_errors_only_its_component_of_its_rollout(mode, reason):
    rubric = Rubric([misbehave, steady], timeout=1.0, workers=FAILURE_WORKERS)
    runner = shared_runner(FAILURE_WORKERS)
    rubric.score([rollout("warm")] * 6)  # every worker started and holding the functions
    before = set(runner.worker_pids)
    assert len(before) == FAILURE_WORKERS

    texts = ["a", mode, "bb", "ccc", "dddd"]
    scored = rubric.score([rollout(text) for text in texts])

    bad = scored[1]
    assert bad.components == {"misbehave": None, "steady": 1.0}
    assert bad.errors == {"misbehave": reason}
    assert bad.errored and bad.reward == 1.0  # the total is over the components that ran
    for text, good in zip(texts, scored, strict=True):
        if text != mode:
            assert not good.errored and good.components["misbehave"] == float(len(text))

    after = set(runner.worker_pids)
    if mode == "raise":
        assert after == before  # an exception is the function's failure, not the worker's
    else:
        [lost] = before - after
        assert not alive(lost)
    again = rubric.score([rollout("fine")] * 6)  # a replacement worker takes over
    assert [s.components["misbehave"] for s in again] == [4.0] * 6


def hog(completion: str) -> float:
    """Allocates 2 GB, far more than its worker may, when asked to: at once, or 8 MB at a time."""
    if completion == "at once":
        bytearray(2 << 30)
    if completion == "bit by bit":
        blocks = [bytearray(8 << 20) for _ in range(256)]
        return float(len(blocks))
    return float(len(completion))


def address_space_mb(completion: str) -> float:
    import resource

    return resource.getrlimit(resource.RLIMIT_AS)[0] / 2**20


@pytest.mark.parametrize("mode", ["at once", "bit by bit"])
def test_a_call_over_the_memory_limit_errors_and_its_worker_is_replaced(mode):
    rubric = Rubric([hog], workers=2, memory_mb=256, timeout=10.0)
    runner = shared_runner(2, 256)
    rubric.score([rollout("warm")] * 4)
    before = set(runner.worker_pids)
    assert len(before) == 2

    texts = ["a", mode, "bb", "ccc", "dddd", "eeeee"]
    scored = rubric.score([rollout(text) for text in texts])
    assert scored[1].errors == {"hog": "memory limit (256 MB) reached"}
    assert [s.components["hog"] for i, s in enumerate(scored) if i != 1] == [1.0, 2.0, 3.0, 4.0, 5.0]
    [lost] = before - set(runner.worker_pids)
    assert not alive(lost)
    again = rubric.score([rollout("fine")] * 4)  # a replacement worker takes over
    assert [s.components["hog"] for s in again] == [4.0] * 4


def test_the_memory_limit_has_a_default_and_is_configurable():
    assert Rubric([address_space_mb], workers=1).score([rollout("x")])[0].reward == 4096
    assert Rubric([address_space_mb], workers=1, memory_mb=1024).score([rollout("x")])[0].reward == 1024
    unlimited = Rubric([address_space_mb], workers=1, memory_mb=None).score([rollout("x")])[0].reward
    assert unlimited == address_space_mb("")  # as this process has it
    with pytest.raises(RewardlabError, match="memory_mb must be a positive integer or None"):
        Rubric([steady], memory_mb=0)


def test_each_function_can_have_its_own_timeout():
    rubric = Rubric([steady], timeout=30.0, workers=FAILURE_WORKERS).add(misbehave, name="quick", timeout=0.5)
    [scored] = rubric.score([rollout("hang")])
    assert scored.errors == {"quick": "timed out after 0.5s"} and scored.components["steady"] == 1.0


def test_calls_run_in_parallel_across_workers(tmp_path):
    """Each call waits until all four have started: serial execution would time out, parallel cannot."""

    def rendezvous(info) -> float:
        import os
        import pathlib
        import time

        folder = pathlib.Path(info["folder"])
        (folder / str(os.getpid())).touch()
        deadline = time.monotonic() + 20
        while len(list(folder.iterdir())) < 4:
            if time.monotonic() > deadline:
                raise RuntimeError("the other calls never started: not running in parallel")
            time.sleep(0.01)
        return 1.0

    scored = Rubric([rendezvous], workers=4).score([rollout("x", info={"folder": str(tmp_path)})] * 4)
    assert [s.reward for s in scored] == [1.0] * 4 and not any(s.errors for s in scored)
    assert len(list(tmp_path.iterdir())) == 4  # four distinct worker processes


def test_closures_and_lambdas_run_in_worker_processes():
    offset = 10

    def shifted(completion: str) -> float:
        return len(completion) + offset

    rubric = Rubric([shifted, lambda completion: float(os.getpid())], names=["shifted", "pid"], workers=2)
    [scored] = rubric.score([rollout("abc")])
    assert scored.components["shifted"] == 13.0
    assert scored.components["pid"] != os.getpid()


def test_functions_from_a_user_file_loaded_under_a_made_up_module_name(tmp_path):
    """The registry imports an environment file under a module name no worker can import; its functions,
    helpers and parser class must travel by value."""
    path = tmp_path / "shouting_env.py"
    path.write_text(
        textwrap.dedent(
            """
            import os

            from rewardlab.envs import SingleTurnEnv
            from rewardlab.rubrics import Parser, Rubric

            BONUS = 0.5


            class ShoutParser(Parser):
                def parse_answer(self, completion):
                    return completion.upper()


            def _exclamations(text):
                return text.count("!")


            def excited(completion, parser):
                return _exclamations(parser.parse_answer(completion)) + BONUS


            def where(completion):
                return float(os.getpid())


            def load_environment():
                parser = ShoutParser()
                return SingleTurnEnv(
                    dataset=[{"prompt": "hi"}], rubric=Rubric([excited, where], parser=parser, workers=2)
                )
            """
        )
    )
    env = load_environment(str(path))
    [scored] = env.rubric.score([rollout("wow!!")])
    assert scored.errors == {}
    assert scored.components["excited"] == 2.5
    assert scored.components["where"] != os.getpid()


def alarm_user(completion: str) -> float:
    """Like a library that times itself out with SIGALRM, which only a main thread may do."""

    def on_alarm(signum, frame):
        raise TimeoutError("the alarm fired")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.alarm(1)  # set and cancel, as a library does around a quick operation
        signal.alarm(0)
        signal.setitimer(signal.ITIMER_REAL, 0.05)  # and one that fires
        try:
            time.sleep(5)
        except TimeoutError:
            return 1.0
        return 0.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_reward_functions_run_in_the_main_thread_where_signals_work():
    [scored] = Rubric([alarm_user], timeout=10.0, workers=2).score([rollout("x")])
    assert scored.errors == {} and scored.reward == 1.0


def test_math_verify_works_inside_the_pool():
    pytest.importorskip("math_verify")
    from rewardlab.rubrics import math_equivalence

    rubric = Rubric([math_equivalence(), worker_pid], parser=XMLParser(), timeout=20.0, workers=2)
    example = Example("m", [{"role": "user", "content": "half?"}], "\\frac{1}{2}")
    rollouts = [
        Rollout(example, i, [{"role": "assistant", "content": f"<answer>{text}</answer>"}])
        for i, text in enumerate(["0.5", "1/2", "0.6", "banana"])
    ]
    scored = rubric.score(rollouts)
    assert [s.components["math_equivalence"] for s in scored] == [1.0, 1.0, 0.0, 0.0]
    assert all(s.components["worker_pid"] != os.getpid() for s in scored)


def test_an_unpicklable_function_warns_once_and_runs_here():
    lock = threading.Lock()

    def guarded(completion: str) -> float:
        with lock:
            return float(os.getpid())

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rubric = Rubric([guarded, worker_pid], workers=2)
        first = rubric.score([rollout("a"), rollout("b")])
        second = rubric.score([rollout("c")])
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1
    assert "'guarded'" in messages[0] and "without a timeout" in messages[0]
    assert all(s.components["guarded"] == os.getpid() for s in first + second)
    assert all(s.components["worker_pid"] != os.getpid() for s in first + second)


def test_unpicklable_arguments_warn_once_and_run_here():
    def turns(state) -> float:
        return float(state["turns"])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rubric = Rubric([turns], workers=2)
        scored = rubric.score([rollout("a", state={"turns": 2, "lock": threading.Lock()})] * 3)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "arguments of reward function 'turns'" in messages[0]
    assert [s.reward for s in scored] == [2.0] * 3


def test_inline_isolation_runs_here_and_options_are_checked():
    [scored] = Rubric([worker_pid], isolation="inline").score([rollout("x")])
    assert scored.reward == os.getpid()
    for bad in ({"isolation": "thread"}, {"timeout": 0}, {"workers": 0}):
        with pytest.raises(RewardlabError) as error:
            Rubric([steady], **bad)
        assert "\n" not in str(error.value)


def test_async_functions_stay_in_the_event_loop_with_a_timeout():
    async def slow(completion: str) -> float:
        import asyncio

        await asyncio.sleep(5)
        return 1.0

    async def raises_timeout(completion: str) -> float:
        raise TimeoutError("its own")

    async def here(completion: str) -> float:
        return float(os.getpid())

    rubric = Rubric([slow, raises_timeout, here], timeout=0.3, workers=2)
    [scored] = rubric.score([rollout("x")])
    assert scored.errors == {"slow": "timed out after 0.3s", "raises_timeout": "TimeoutError: its own"}
    assert scored.components["here"] == os.getpid()


def test_completion_tokens_are_the_model_generated_tokens():
    def count(completion_tokens) -> float:
        return -1.0 if completion_tokens is None else float(completion_tokens)

    scored = Rubric([count], workers=2).score([rollout("x", mask=[1, 1, 0, 1]), rollout("y")])
    assert [s.reward for s in scored] == [3.0, -1.0]


def test_close_stops_every_worker_and_fails_what_is_left():
    runner = RewardRunner(workers=2)
    napping = ship(nap, "nap")
    quick, long = pack_arguments({"info": {"seconds": 0}}), pack_arguments({"info": {"seconds": 60}})
    futures = runner.submit([(napping, quick, ()), (napping, quick, ()), (napping, long, ())], timeout=120)
    assert [f.result(timeout=20) for f in futures[:2]] == [1.0, 1.0]
    pids = runner.worker_pids
    assert len(pids) == 2 and all(alive(pid) for pid in pids)
    runner.close()  # one worker is in the middle of its 60 s nap
    with pytest.raises(RewardCallError, match="closed"):
        futures[2].result(timeout=5)
    assert runner.worker_pids == [] and not any(alive(pid) for pid in pids)


def test_workers_leave_when_their_parent_is_killed(tmp_path):
    """No guard on __main__, a hanging call, then SIGKILL to the parent: the workers still go."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import threading, time
            from rewardlab.rubrics import Rubric
            from rewardlab.rubrics.runner import shared_runner
            from rewardlab.types import Example, Rollout

            def hang(completion):
                time.sleep(1e6)

            example = Example("e", [{"role": "user", "content": "q"}])
            rollouts = [Rollout(example, i, [{"role": "assistant", "content": "x"}]) for i in range(2)]
            rubric = Rubric([hang], timeout=600, workers=2)
            threading.Thread(target=rubric.score, args=(rollouts,), daemon=True).start()
            while len(shared_runner(2).worker_pids) < 2:
                time.sleep(0.05)
            print(*shared_runner(2).worker_pids, flush=True)
            time.sleep(1e6)
            """
        )
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(pid) for pid in parent.stdout.readline().split()]
    finally:
        parent.kill()
        parent.wait()
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)


def test_json_rubrics_run_in_the_worker_pool_without_falling_back():
    """The JSON parser travels to the worker processes; nothing runs in-process with a warning."""
    from rewardlab.rubrics.parsers import JSONParser

    parser = JSONParser()

    def has_ids(completion, parser):
        return float(bool((parser.parse_answer(completion) or {}).get("ids")))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to in-process calls warns
        rubric = Rubric([has_ids], parser=parser)
    assert rubric.functions[0].shipped is not None
    good, bad = rubric.score([rollout('{"ids": [1]}'), rollout("not json")])
    assert (good.reward, bad.reward) == (1.0, 0.0) and not good.errors
