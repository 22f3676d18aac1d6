using System.Diagnostics;
using System.Security.Cryptography;

// Writes the same file of random data to an SSH server with scp and with SshBackupStore, taking turns, and prints
// both speeds and their medians. The store is driven as the copy engine drives it: 1 MiB reads of the local file,
// each handed to WriteAsync, then CompleteAsync (size, fsync). scp does no fsync, so the store carries that extra:
// the time until CompleteAsync is printed too.
//   dotnet run -c Release --project tools/SshBenchmark -- <host or alias> <remote folder> [MiB] [rounds] [ssh config file]
if (args.Length < 2)
{
    Console.Error.WriteLine("usage: SshBenchmark <host> <remote folder> [MiB=1024] [rounds=3] [ssh config file]");
    return 2;
}
var host = args[0];
var folder = args[1];
var mebibytes = args.Length > 2 ? int.Parse(args[2]) : 1024;
var rounds = args.Length > 3 ? int.Parse(args[3]) : 3;
var configFile = args.Length > 4 ? args[4] : null;
var size = (long)mebibytes << 20;

var source = Path.Combine(Path.GetTempPath(), $"ssh-benchmark-{Environment.ProcessId}.bin");
using (var file = File.Create(source))
{
    var block = new byte[1 << 20];
    for (var i = 0; i < mebibytes; i++)
    {
        RandomNumberGenerator.Fill(block);
        file.Write(block);
    }
}
try
{
    var config = configFile is null ? Array.Empty<string>() : ["-F", configFile];
    Console.WriteLine($"{mebibytes} MiB of random data to {host}:{folder}, cipher {NegotiatedCipher(host, config)}, {Environment.ProcessorCount} cores");
    var runner = new CliWrapProcessRunner(NullSink.Instance);
    var ssh = new SshClient(new SshDestination(null, host, folder), runner, runner, new SshOptions { ConfigFile = configFile });
    await using var store = new SshBackupStore(ssh);
    var scpTimes = new List<TimeSpan>();
    var storeTimes = new List<TimeSpan>();
    var completeTimes = new List<TimeSpan>();
    for (var round = 1; round <= rounds; round++)
    {
        // Alternate who goes first, so that neither always finds the server's page cache in the other's wake.
        for (var turn = 0; turn < 2; turn++)
        {
            if ((round + turn) % 2 == 0)
            {
                var scp = Stopwatch.StartNew();
                Run("scp", [.. config, "-q", source, $"{host}:{folder}/scp.bin"]);
                scpTimes.Add(scp.Elapsed);
            }
            else
            {
                var (total, complete) = await WriteWithStoreAsync(store, source);
                storeTimes.Add(total);
                completeTimes.Add(complete);
            }
        }
        Console.WriteLine($"round {round}: scp {Speed(size, scpTimes[^1])} MiB/s ({scpTimes[^1].TotalSeconds:0.00} s), " +
            $"SshBackupStore {Speed(size, storeTimes[^1])} MiB/s ({storeTimes[^1].TotalSeconds:0.00} s, of which CompleteAsync: size + fsync {completeTimes[^1].TotalSeconds:0.00} s)");
    }
    var scpMedian = Median(scpTimes);
    var storeMedian = Median(storeTimes);
    var transferMedian = Median(storeTimes.Zip(completeTimes, (total, complete) => total - complete).ToList());
    Console.WriteLine($"median: scp {Speed(size, scpMedian)} MiB/s, SshBackupStore {Speed(size, storeMedian)} MiB/s with fsync " +
        $"({storeMedian / scpMedian * 100:0}% of scp's time), {Speed(size, transferMedian)} MiB/s until CompleteAsync ({transferMedian / scpMedian * 100:0}% of scp's time)");
    await store.DeleteAsync("store.bin", recursive: false, CancellationToken.None);
    Run("ssh", [.. config, host, "rm", "-f", $"{folder}/scp.bin"]);
    return 0;
}
finally
{
    File.Delete(source);
}

static async Task<(TimeSpan Total, TimeSpan Complete)> WriteWithStoreAsync(SshBackupStore store, string source)
{
    var clock = Stopwatch.StartNew();
    await using var writer = await store.CreateFileAsync("store.bin", CancellationToken.None);
    using var input = File.OpenRead(source);
    var buffer = new byte[1 << 20];
    long offset = 0;
    int read;
    while ((read = input.Read(buffer)) > 0)
    {
        await writer.WriteAsync(offset, buffer.AsMemory(0, read), CancellationToken.None);
        offset += read;
    }
    var sent = clock.Elapsed;
    await writer.CompleteAsync(offset, CancellationToken.None);
    return (clock.Elapsed, clock.Elapsed - sent);
}

static TimeSpan Median(List<TimeSpan> times) => times.Order().ElementAt(times.Count / 2);

static string Speed(long bytes, TimeSpan elapsed) => (bytes / 1048576.0 / elapsed.TotalSeconds).ToString("0");

static void Run(string program, string[] arguments)
{
    using var process = Process.Start(new ProcessStartInfo(program, arguments) { RedirectStandardError = true })!;
    var error = process.StandardError.ReadToEnd();
    process.WaitForExit();
    if (process.ExitCode != 0)
        throw new InvalidOperationException($"{program} failed ({process.ExitCode}): {error}");
}

static string NegotiatedCipher(string host, string[] config)
{
    using var process = Process.Start(new ProcessStartInfo("ssh", [.. config, "-v", "-o", "BatchMode=yes", host, "true"]) { RedirectStandardError = true })!;
    var lines = process.StandardError.ReadToEnd().Split('\n');
    process.WaitForExit();
    var line = lines.FirstOrDefault(l => l.Contains("kex: client->server cipher:", StringComparison.Ordinal));
    return line is null ? "(unknown)" : line[(line.IndexOf("cipher:", StringComparison.Ordinal) + 8)..].Split(' ')[0];
}
