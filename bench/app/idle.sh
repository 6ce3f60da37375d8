#!/bin/sh
# An idle app that costs almost nothing itself, so 1000 of them measure the process manager.
exec sleep 86400
