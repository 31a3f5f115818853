-- wrk script: POST /v1/jobs with the seed config_list; MODEL_ID comes from the environment.
local model_id = os.getenv("MODEL_ID")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model_id": "' .. model_id .. '", "pruner": "l1norm", "speedup": true, "device": "cpu",'
  .. ' "input_shape": [1, 1, 28, 28], "config_list": [{"sparsity_per_layer": 0.5, "op_types": ["Linear", "Conv2d"]},'
  .. ' {"exclude": true, "op_names": ["fc2"]}]}'
