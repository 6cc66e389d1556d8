import sys

from cbtcompare.cli import main

sys.exit(main())
