import sys

from trm.train.entry import main

sys.exit(main())
