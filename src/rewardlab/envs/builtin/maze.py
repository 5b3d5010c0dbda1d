"""Grid mazes: walk the agent A to the goal G one move at a time, replying <move>up</move>.

Each maze is a random grid of free cells ``.`` and walls ``#`` (levels set the size and the wall density)
with the agent ``A`` and the goal ``G`` at least a few steps apart. Generation keeps only mazes a
breadth-first search can solve, and asserts it for every maze it returns. The environment answers a move
with the new board, or with an "invalid move" message when the move runs into a wall, leaves the grid or
cannot be read (an invalid move uses up a turn and leaves the agent where it was). An episode ends at the
goal or when the level's move budget is spent.

A maze's split is decided by a hash of its board, so train and held-out mazes never coincide, whatever the
seed. Rewards: reaching the goal (primary), progress (how much of the initial BFS distance was closed),
and two measurements with weight 0: ``steps_over_optimal`` and ``invalid_moves``.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from rewardlab.envs.base import MultiTurnEnv
from rewardlab.envs.builtin.splits import (
    ADVERSARIAL_SEED_OFFSET,
    Procedural,
    check_split_sizes,
    checked_levels,
    split_draws,
)
from rewardlab.envs.dataset import load_examples
from rewardlab.errors import RewardlabError
from rewardlab.rubrics.parsers import XMLParser
from rewardlab.rubrics.rubric import Rubric
from rewardlab.types import Example, Messages

Cell = tuple[int, int]  # (row, column)
MOVES: dict[str, Cell] = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
# size is rows x columns; min_distance keeps a maze from being solved in one or two moves.
LEVELS: dict[int, dict[str, Any]] = {
    1: {"size": (4, 4), "wall_density": 0.15, "min_distance": 3, "max_moves": 12},
    2: {"size": (6, 6), "wall_density": 0.25, "min_distance": 5, "max_moves": 20},
    3: {"size": (8, 8), "wall_density": 0.30, "min_distance": 8, "max_moves": 32},
    4: {"size": (10, 10), "wall_density": 0.35, "min_distance": 12, "max_moves": 48},
}
UNREADABLE_MOVE = (
    "Invalid move: write exactly one of <move>up</move>, <move>down</move>, <move>left</move> "
    "or <move>right</move>."
)
SYSTEM_PROMPT = (
    "You move the agent A through a grid maze to the goal G. '.' is a free cell and '#' is a wall; you "
    "cannot move into a wall or off the grid. Each turn, reply with exactly one move: <move>up</move>, "
    "<move>down</move>, <move>left</move> or <move>right</move>. Reach G in as few moves as you can."
)


# -- mazes -----------------------------------------------------------------------------------------------


def parse_board(board: str) -> tuple[list[str], Cell, Cell]:
    """Rows of the board (A and G shown as free cells), the agent's cell and the goal's cell."""
    rows = board.split("\n")
    agent = goal = None
    for r, row in enumerate(rows):
        if "A" in row:
            agent = (r, row.index("A"))
        if "G" in row:
            goal = (r, row.index("G"))
    if agent is None or goal is None:
        raise ValueError("a board needs one A and one G")
    return [row.replace("A", ".").replace("G", ".") for row in rows], agent, goal


def render(grid: list[str], agent: Cell, goal: Cell) -> str:
    rows = [list(row) for row in grid]
    rows[goal[0]][goal[1]] = "G"
    rows[agent[0]][agent[1]] = "A"  # drawn last: standing on the goal shows A
    return "\n".join("".join(row) for row in rows)


def step(grid: list[str], cell: Cell, move: str) -> tuple[Cell | None, str]:
    """The cell a move leads to, or ``None`` and why the move is not allowed."""
    dr, dc = MOVES[move]
    r, c = cell[0] + dr, cell[1] + dc
    if not (0 <= r < len(grid) and 0 <= c < len(grid[0])):
        return None, "out of bounds"
    if grid[r][c] == "#":
        return None, "wall"
    return (r, c), ""


def distances_to(grid: list[str], goal: Cell) -> dict[Cell, int]:
    """BFS distance from every reachable free cell to ``goal`` (moves are symmetric, so one search)."""
    distance = {goal: 0}
    queue = deque([goal])
    while queue:
        cell = queue.popleft()
        for move in MOVES:
            nxt, _ = step(grid, cell, move)
            if nxt is not None and nxt not in distance:
                distance[nxt] = distance[cell] + 1
                queue.append(nxt)
    return distance


def best_move(grid: list[str], cell: Cell, goal: Cell) -> str | None:
    """A move on a shortest path to the goal (the first in MOVES order), ``None`` if there is none."""
    distance = distances_to(grid, goal)
    here = distance.get(cell)
    if here is None or here == 0:
        return None
    for move in MOVES:
        nxt, _ = step(grid, cell, move)
        if nxt is not None and distance.get(nxt) == here - 1:
            return move
    return None


def random_maze(rng: random.Random, level: int) -> tuple[list[str], Cell, Cell, int]:
    """A solvable maze of ``level``: (grid, agent, goal, shortest path length). Retries until solvable."""
    spec = LEVELS[level]
    rows, columns = spec["size"]
    for _ in range(1000):
        grid = [
            "".join("#" if rng.random() < spec["wall_density"] else "." for _ in range(columns))
            for _ in range(rows)
        ]
        free = [(r, c) for r in range(rows) for c in range(columns) if grid[r][c] == "."]
        if len(free) < 2:
            continue
        agent, goal = rng.sample(free, 2)
        optimal = distances_to(grid, goal).get(agent)
        if optimal is not None and optimal >= spec["min_distance"]:
            return grid, agent, goal, optimal
    raise RewardlabError(f"could not generate a solvable level-{level} maze")  # never seen in practice


def generate_mazes(
    levels: list[int], count: int, split: str, seed: int, eval_fraction: float
) -> list[dict[str, Any]]:
    """``count`` distinct mazes on ``split``'s side of the hash split, levels taken in turn."""
    rng = random.Random(f"maze:{split}:{seed}")

    def draw(level: int) -> tuple[str, tuple]:
        grid, agent, goal, optimal = random_maze(rng, level)
        board = render(grid, agent, goal)
        return board, (board, grid, agent, goal, optimal)

    rows: list[dict[str, Any]] = []
    for level, (board, grid, agent, goal, optimal) in split_draws(
        count, levels, split, eval_fraction, draw, "mazes"
    ):
        # The promise every maze keeps: BFS reaches the goal from the start.
        assert distances_to(grid, goal).get(agent) == optimal, "generated an unsolvable maze"
        rows.append(
            {
                "prompt": f"{board}\n\nYou are A. Reach G within {LEVELS[level]['max_moves']} moves.",
                "answer": str(optimal),
                "info": {
                    "board": board,
                    "level": level,
                    "optimal": optimal,
                    "max_moves": LEVELS[level]["max_moves"],
                },
            }
        )
    return rows


# -- the environment ---------------------------------------------------------------------------------------


class MazeEnv(Procedural, MultiTurnEnv):
    name = "maze"
    description = "Walk a grid maze to the goal, one <move> per turn; levels 1-4."
    max_new_tokens_by_style = {"terse": 16, "chat": 24}

    generate_rows = staticmethod(generate_mazes)

    def initial_state(self, example: Example) -> dict[str, Any]:
        grid, agent, goal = parse_board(example.info["board"])
        return {
            "grid": grid,
            "position": list(agent),
            "goal": list(goal),
            "start_distance": example.info["optimal"],
            "distance": example.info["optimal"],
            "moves": 0,  # turns taken, invalid ones included: each costs a turn of the budget
            "invalid_moves": 0,
            "max_moves": example.info["max_moves"],
            "solved": False,
            "done": False,
        }

    def is_completed(self, messages: Messages, state: dict[str, Any]) -> bool:
        return state["done"]

    def env_response(self, messages: Messages, state: dict[str, Any]) -> Messages:
        state["moves"] += 1
        move = (self.parser.parse_answer(messages[-1]["content"]) or "").strip().lower()
        grid, position, goal = state["grid"], tuple(state["position"]), tuple(state["goal"])
        if move not in MOVES:
            state["invalid_moves"] += 1
            reply = UNREADABLE_MOVE
        else:
            target, reason = step(grid, position, move)
            if target is None:
                state["invalid_moves"] += 1
                reply = (
                    f"Invalid move: {move} runs into a {reason}."
                    if reason == "wall"
                    else f"Invalid move: {move} goes {reason}."
                )
            else:
                state["position"] = list(target)
                state["distance"] = distances_to(grid, goal).get(target, state["distance"])
                reply = f"Moved {move}."
        board = render(grid, tuple(state["position"]), goal)
        if tuple(state["position"]) == goal:
            state["solved"] = state["done"] = True
            return [
                {"role": "user", "content": f"{board}\n\nYou reached the goal in {state['moves']} moves."}
            ]
        left = state["max_moves"] - state["moves"]
        if left <= 0:
            state["done"] = True
            return [{"role": "user", "content": f"{reply}\n{board}\n\nOut of moves."}]
        return [{"role": "user", "content": f"{reply}\n{board}\n\n{left} moves left."}]

    def adversarial_examples(self, n: int, seed: int) -> list[Example]:
        """Held-out-side mazes of the hardest configured level whose shortest path is at least 1.5 times
        the straight-line (Manhattan) distance: "walk towards G" runs into walls there."""
        level = max(self.levels)
        rows: dict[str, dict[str, Any]] = {}
        for batch in range(50):
            batch_seed = seed + ADVERSARIAL_SEED_OFFSET + batch
            for row in generate_mazes([level], 4 * n, "eval", batch_seed, self.eval_fraction):
                _, agent, goal = parse_board(row["info"]["board"])
                manhattan = abs(agent[0] - goal[0]) + abs(agent[1] - goal[1])
                if row["info"]["optimal"] >= 1.5 * manhattan:
                    rows.setdefault(row["info"]["board"], row)
            if len(rows) >= n:
                return load_examples(list(rows.values())[:n], self.system_prompt)
        raise RewardlabError(
            f"found only {len(rows)} adversarial level-{level} mazes; ask for at most that many"
        )

    def policies(self):
        """``oracle`` follows a BFS shortest path (so it always solves the maze in the optimal number of
        moves); ``random`` replies a uniformly random direction, walls or not."""

        def oracle(messages, state, example, rng):
            move = best_move(state["grid"], tuple(state["position"]), tuple(state["goal"]))
            return self.parser.format_answer(move or "up")

        def random_move(messages, state, example, rng):
            return self.parser.format_answer(rng.choice(list(MOVES)))

        return {"oracle": oracle, "random": random_move}


# -- rewards -----------------------------------------------------------------------------------------------


def reached_goal(state: dict[str, Any]) -> float:
    return 1.0 if state.get("solved") else 0.0


def progress(state: dict[str, Any]) -> float:
    """The share of the starting BFS distance closed by the end: 1 at the goal, 0 if no closer (or
    farther). Dense where ``reached_goal`` is all-or-nothing, so a policy that gets closer is told so."""
    start = state["start_distance"]
    return max(0.0, (start - state["distance"]) / start)


def steps_over_optimal(state: dict[str, Any]) -> float:
    """Turns taken (invalid ones included) minus the shortest path, for a solved maze. An unsolved maze
    reports ``max_moves - optimal + 1``, worse than any solved episode can be, so the mean still ranks
    policies; read it next to ``reached_goal``."""
    if state.get("solved"):
        return float(state["moves"] - state["start_distance"])
    return float(state["max_moves"] - state["start_distance"] + 1)


def invalid_moves(state: dict[str, Any]) -> float:
    return float(state.get("invalid_moves", 0))


def load_environment(
    level: int | list[int] = 1,
    num_train: int = 2000,
    num_eval: int = 200,
    seed: int = 0,
    eval_fraction: float = 0.1,
    progress_weight: float = 0.2,
    system_prompt: str | None = SYSTEM_PROMPT,
    prompt_style: str = "terse",
) -> MazeEnv:
    """Mazes at ``level`` (an int or a list for a mix). The rubric is ``reached_goal`` (weight 1) plus
    ``progress`` shaping (``progress_weight``); ``steps_over_optimal`` and ``invalid_moves`` are weight-0
    measurements."""
    levels = checked_levels(level, LEVELS)
    check_split_sizes(num_train, num_eval, eval_fraction)
    if progress_weight < 0:
        raise ValueError(f"progress_weight must be >= 0, got {progress_weight}")
    parser = XMLParser(answer_tag="move")
    rubric = Rubric(
        [reached_goal, progress, steps_over_optimal, invalid_moves],
        weights=[1.0, progress_weight, 0.0, 0.0],
        parser=parser,
    )
    # The budget of each maze is enforced in env_response (its last move is judged, then the episode ends).
    max_turns = max(LEVELS[lv]["max_moves"] for lv in levels)
    return MazeEnv(
        levels=levels,
        eval_fraction=eval_fraction,
        dataset=generate_mazes(levels, num_train, "train", seed, eval_fraction),
        eval_dataset=generate_mazes(levels, num_eval, "eval", seed, eval_fraction),
        system_prompt=system_prompt,
        rubric=rubric,
        parser=parser,
        max_turns=max_turns,
        prompt_style=prompt_style,
    )
