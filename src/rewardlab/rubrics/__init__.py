from rewardlab.rubrics.parsers import Parser, XMLParser
from rewardlab.rubrics.rubric import Rubric

__all__ = ["Parser", "Rubric", "XMLParser"]
