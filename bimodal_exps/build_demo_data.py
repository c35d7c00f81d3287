"""Build a small demo dataset in the layout of the README's reference commands; see datasets/README.md.

Example: python bimodal_exps/build_demo_data.py --source auto --out demo_data --seed 0
"""
import sys

from dataset.demo.build import main

if __name__ == "__main__":
    sys.exit(main())
