from rewardlab.rubrics.judge import llm_judge, parse_score
from rewardlab.rubrics.math_rewards import math_equivalence
from rewardlab.rubrics.parsers import Parser, XMLParser
from rewardlab.rubrics.rubric import Rubric
from rewardlab.rubrics.text_rewards import length_penalty, overlong_shaping, regex_format

__all__ = [
    "Parser",
    "Rubric",
    "XMLParser",
    "length_penalty",
    "llm_judge",
    "math_equivalence",
    "overlong_shaping",
    "parse_score",
    "regex_format",
]
