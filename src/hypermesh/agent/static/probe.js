// A worker that asks whether the agent answers again, for app.js while it is disconnected. A refused
// connection is the expected answer then; made from the page, each try printed a red "Failed to load resource"
// in the console, one every few seconds for as long as the agent was away. The page says it in its own words
// ("disconnected since …"), so the tries are made here, where they stay out of the page's console.
"use strict";
onmessage = async (event) => {
  let answered = false;
  try {
    const response = await fetch(event.data, { cache: "no-store" });
    answered = response.status > 0; // any HTTP answer (503 degraded, 401) means the agent is back
  } catch (err) {
    answered = false;
  }
  postMessage(answered);
};
