"""Write a contact sheet of the breeds world: per breed, a few samples and then their part maps.

Usage: python -m pipeline.world OUT.png [--per-breed 4] [--seed 0]
"""

import argparse

from PIL import Image

from pipeline.world.breeds import contact_sheet

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("out", help="PNG path")
parser.add_argument("--per-breed", type=int, default=4)
parser.add_argument("--seed", type=int, default=0)
arguments = parser.parse_args()
Image.fromarray(contact_sheet(arguments.per_breed, arguments.seed)).save(arguments.out, optimize=True)
