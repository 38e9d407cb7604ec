-- wrk script: the TF Serving REST predict request the benchmark sends.
wrk.method = "POST"
wrk.body = '{"instances": [[1.0], [2.0], [5.0]]}'
wrk.headers["Content-Type"] = "application/json"
