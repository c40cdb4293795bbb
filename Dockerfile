# Image for the stategrid worker (used by docker-compose.yml).
FROM node:20-slim

WORKDIR /app

# Dependencies first for layer caching. Scripts are skipped because `prepare` runs `tsc`,
# which needs the sources copied below; the build runs explicitly afterwards.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts

COPY . .
RUN npm run build

CMD ["node", "dist/src/worker.js"]
