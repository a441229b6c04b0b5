-- Argo CD health of a drover.dev/ModelDeployment, from the status Drover writes.
-- Install: resource.customizations.health.drover.dev_ModelDeployment in argocd-cm (docs/gitops.md).
-- Checked against sample statuses by scripts/ci/check_health_lua.py.
local hs = {status = "Progressing", message = "Waiting for Drover to observe the ModelDeployment"}
if obj.status == nil then
  return hs
end
local st = obj.status
if obj.metadata ~= nil and obj.metadata.generation ~= nil and
   (st.observedGeneration == nil or st.observedGeneration < obj.metadata.generation) then
  hs.message = "Drover has not observed generation " .. obj.metadata.generation .. " yet"
  return hs
end
local cond = {}
if st.conditions ~= nil then
  for _, c in ipairs(st.conditions) do
    cond[c.type] = c
  end
end
local function is_true(t)
  return cond[t] ~= nil and cond[t].status == "True"
end
local function say(t, fallback)
  if cond[t] ~= nil and cond[t].message ~= nil and cond[t].message ~= "" then
    return cond[t].message
  end
  if st.message ~= nil and st.message ~= "" then
    return st.message
  end
  return fallback
end
-- A paused canary waits for a person: Suspended, like a paused Argo Rollout.
if st.rollout ~= nil and st.rollout.phase == "Paused" then
  hs.status = "Suspended"
  hs.message = say("Progressing", "Canary paused")
  return hs
end
-- Stuck until the spec changes, or the newest revision was rejected.
if is_true("Stalled") or st.phase == "Failed" or st.phase == "RolledBack" then
  hs.status = "Degraded"
  hs.message = say("Stalled", say("Degraded", "Rolled back"))
  return hs
end
if is_true("Degraded") or st.phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = say("Degraded", "Degraded")
  return hs
end
if is_true("Progressing") or is_true("Reconciling") or st.phase == "Progressing" then
  hs.status = "Progressing"
  hs.message = say("Progressing", "Rolling out")
  return hs
end
if is_true("Ready") and st.phase == "Healthy" then
  hs.status = "Healthy"
  hs.message = say("Ready", "Serving")
  return hs
end
hs.message = say("Ready", "Waiting for the serving revision")
return hs
