"""What a run of recipes can be beyond one training: `study.py` (`autolr study`: arms x seeds on the test
split, paired). (With issue 14's move, the other modes join it here.)"""
