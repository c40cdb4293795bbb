# Image for the stategrid worker (used by docker-compose.yml).
FROM node:20-slim

WORKDIR /app

# Dependencies first for layer caching. Scripts are skipped because `prepare` runs `tsc`,
# which needs the sources copied below; the build runs explicitly afterwards.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts

COPY . .
RUN npm run build

# The flags of every worker process (src/stack/workers.ts).
CMD ["node", "--max-semi-space-size=16", "--max-old-space-size=256", "--single-threaded-gc", "dist/src/worker.js"]
