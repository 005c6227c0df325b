# Chart of a run.sh run: throughput per target (bars, min–max whiskers) and open-loop latency
# percentiles per target. Called by run.sh with datafile, outfile and rate set.
set terminal pngcairo size 1200,480 font "sans,10"
set output outfile
set multiplot layout 1,2
set style fill solid 0.8 border -1
set grid ytics
set key top left
set xtics nomirror
set boxwidth 0.6

set title sprintf("Throughput, closed loop (wrk -t1 -c%s), median and min–max", conns)
set ylabel "requests/s"
set yrange [0:*]
plot datafile using 0:2:xtic(1) with boxes lc rgb "#4477aa" notitle, \
     '' using 0:2:3:4 with yerrorbars lc rgb "black" pt 0 notitle, \
     '' using 0:2:(sprintf("%.0f", $2)) with labels offset 0,1 notitle

set title sprintf("Latency at %s req/s, open loop (oha --latency-correction), medians", rate)
set ylabel "µs (log scale)"
set logscale y
set yrange [*:*]
set style data histograms
set style histogram clustered gap 1
set boxwidth 0.9
plot datafile using 5:xtic(1) title "p50" lc rgb "#66ccee", \
     '' using 6 title "p99" lc rgb "#4477aa", \
     '' using 7 title "p99.9" lc rgb "#223355"
unset multiplot
