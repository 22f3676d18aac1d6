using System.Diagnostics;
using System.Security.Cryptography;

[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

// Prints seconds per GiB (median of the rounds; wall clock and CPU time of this process) of:
//   builder: building a block digest list from 1 MiB pieces in memory (PIECE=<bytes> for another size, a power of
//            two), as the copy engine feeds it, on one thread and on two, for random data, zeros read from an
//            allocated file, and holes; plus each of the two SHA-256 passes alone.
//   server:  the server's segment digest script (ServerScripts.SegmentDigests) run here with sh, as sshd runs it,
//            each tool forced in turn, over a file of random data and over a file of holes, in a folder of your
//            choice; the file's cached pages dropped before each run (sync, then dd iflag=nocache count=0, checked
//            with fincore), and `cat FILE > /dev/null` as the floor: the disk's own speed.
//   clone:   FileClone.Clone and the server's clone script (ServerScripts.CloneFile) of a file of random data, in a
//            folder of your choice (XFS with reflink: a reflink; ext4: a local copy).
//   dotnet run -c Release --project tools/DigestBenchmark -- builder [MiB=1024] [rounds=5]
//   dotnet run -c Release --project tools/DigestBenchmark -- server [MiB=1024] [rounds=3] [folder=/var/tmp]
//   dotnet run -c Release --project tools/DigestBenchmark -- clone <folder> [MiB=1024] [rounds=3]
//   copy:    the copy engine (full, incremental, digest list) against `cat FILE > /dev/null` and against the engine
//            of another tree (today's main), on realistic disks: see CopyBenchmark.cs.
//   dotnet run -c Release --project tools/DigestBenchmark -- copy [folder=/var/tmp] [rounds=5] [main core dll] [sizes=boot,vdisk,dense]
var mode = args.Length > 0 ? args[0] : "builder";
Console.WriteLine($"{Environment.ProcessorCount} cores, {RuntimeInfo()}");
return mode switch
{
    "builder" => Builder(Number(args, 1, 1024), Number(args, 2, 5)),
    "server" => Server(Number(args, 1, 1024), Number(args, 2, 3), args.Length > 3 ? args[3] : "/var/tmp"),
    "clone" when args.Length > 1 => Clone(args[1], Number(args, 2, 1024), Number(args, 3, 3)),
    "copy" => CopyBenchmark.Run(args.Length > 1 ? args[1] : "/var/tmp", Number(args, 2, 5), args.Length > 3 && args[3].Length > 0 ? args[3] : null,
        args.Length > 4 ? args[4] : "boot,vdisk"),
    _ => Usage(),
};

static int Number(string[] args, int index, int otherwise) => args.Length > index ? int.Parse(args[index]) : otherwise;

static int Usage()
{
    Console.Error.WriteLine("usage: DigestBenchmark builder [MiB] [rounds] | server [MiB] [rounds] [folder] | clone <folder> [MiB] [rounds] | copy [folder] [rounds] [main core dll] [sizes]");
    return 2;
}

static int Server(int mebibytes, int rounds, string folder)
{
    var data = Path.Combine(folder, $"digest-benchmark-{Environment.ProcessId}.data");
    var holes = Path.Combine(folder, $"digest-benchmark-{Environment.ProcessId}.holes");
    try
    {
        WriteRandom(data, mebibytes);
        using (var file = File.Create(holes))
            file.SetLength((long)mebibytes << 20);
        var segments = Enumerable.Range(0, (int)(((long)mebibytes << 20) / BlockDigestList.SegmentSize)).Select(i => i.ToString()).ToArray();
        var python2 = Directory.Exists("/root/.pyenv/versions")
            ? Directory.GetDirectories("/root/.pyenv/versions", "2.7*").Select(d => Path.Combine(d, "bin/python2.7")).FirstOrDefault(File.Exists)
            : null;
        var tools = new List<string> { "python3", "openssl", "sha256sum" };
        if (python2 is not null)
            tools.Insert(1, python2);
        Console.WriteLine($"{mebibytes} MiB in {folder} ({Shell("stat -f -c %T \"$1\"", folder).Trim()}), all {segments.Length} segments asked, " +
            $"{rounds} rounds, medians in seconds per GiB, cached pages dropped before each run:");
        foreach (var (file, what) in new[] { (data, "random data"), (holes, "holes only") })
        {
            var gib = mebibytes / 1024.0;
            Console.WriteLine($"  {what}:");
            var floor = Median(Enumerable.Range(0, rounds).Select(_ => Timed(file, () => Shell("cat \"$1\" > /dev/null", file)) / gib).ToList());
            Console.WriteLine($"    {"cat FILE > /dev/null (the disk's speed)",-44} {floor,6:0.000}");
            foreach (var tool in tools)
            {
                var script = ServerScripts.SegmentDigestsWith(tool);
                var seconds = Median(Enumerable.Range(0, rounds).Select(_ => Timed(file, () => Shell(script, [file, "1048576", "16", .. segments]))).ToList());
                Console.WriteLine($"    {Label(tool),-44} {seconds / gib,6:0.000}");
            }
        }
        return 0;
    }
    finally
    {
        File.Delete(data);
        File.Delete(holes);
    }
}

static int Clone(string folder, int mebibytes, int rounds)
{
    var source = Path.Combine(folder, $"clone-benchmark-{Environment.ProcessId}");
    WriteRandom(source, mebibytes);
    try
    {
        Console.WriteLine($"{mebibytes} MiB of random data in {folder} ({Shell("stat -f -c %T \"$1\"", folder).Trim()}), {rounds} rounds, medians in seconds:");
        var local = new List<double>();
        var server = new List<double>();
        string storedLocally = "", storedOnServer = "";
        for (var i = 0; i < rounds; i++)
        {
            var target = source + ".clone";
            var clock = Stopwatch.StartNew();
            storedLocally = FileClone.Clone(source, target, CancellationToken.None).StoredAs;
            Shell("sync -f \"$1\"", target);
            local.Add(clock.Elapsed.TotalSeconds);
            File.Delete(target);
            clock.Restart();
            storedOnServer = Shell(ServerScripts.CloneFile, [source, target]).Trim();
            Shell("sync -f \"$1\"", target);
            server.Add(clock.Elapsed.TotalSeconds);
            File.Delete(target);
        }
        Console.WriteLine($"  {"FileClone.Clone, then sync -f",-44} {Median(local),6:0.000}  ({storedLocally})");
        Console.WriteLine($"  {"ServerScripts.CloneFile with sh, then sync",-44} {Median(server),6:0.000}  ({storedOnServer})");
        return 0;
    }
    finally
    {
        File.Delete(source);
    }
}

/// <summary>A Python says whether its hashlib is OpenSSL's (the script's own test), since a build without it is slow.</summary>
static string Label(string tool)
{
    if (!Path.GetFileName(tool).StartsWith("python", StringComparison.Ordinal))
        return tool;
    var version = Shell("\"$1\" -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'", tool).Trim();
    var openSsl = new ProcessStartInfo(tool, ["-c", "import _hashlib"]) { RedirectStandardError = true, UseShellExecute = false };
    using var process = Process.Start(openSsl)!;
    process.StandardError.ReadToEnd();
    process.WaitForExit();
    return $"python {version}, hashlib {(process.ExitCode == 0 ? "of OpenSSL" : "of its own (no OpenSSL)")}";
}

static void WriteRandom(string path, int mebibytes)
{
    using var file = File.Create(path);
    var block = new byte[1 << 20];
    for (var i = 0; i < mebibytes; i++)
    {
        RandomNumberGenerator.Fill(block);
        file.Write(block);
    }
    file.Flush(flushToDisk: true);
}

/// <summary>Seconds of <paramref name="action"/>, the file's pages dropped from the cache first (and checked gone).</summary>
static double Timed(string file, Action action)
{
    Shell("sync \"$1\" && dd if=\"$1\" iflag=nocache count=0 2>/dev/null", file);
    var cached = Shell("fincore -n -b -o RES \"$1\"", file).Trim();
    if (cached != "0")
        throw new InvalidOperationException($"{cached} bytes of {file} are still cached after dropping them.");
    var clock = Stopwatch.StartNew();
    action();
    return clock.Elapsed.TotalSeconds;
}

static string Shell(string script, params string[] arguments)
{
    var start = new ProcessStartInfo("sh", ["-c", script, "sh", .. arguments]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
    using var process = Process.Start(start)!;
    var error = process.StandardError.ReadToEndAsync();
    var output = process.StandardOutput.ReadToEnd();
    process.WaitForExit();
    if (process.ExitCode != 0)
        throw new InvalidOperationException($"sh exited with {process.ExitCode}: {error.Result}");
    return output;
}

static int Builder(int mebibytes, int rounds)
{
    var Piece = int.Parse(Environment.GetEnvironmentVariable("PIECE") ?? "1048576");
    var size = (long)mebibytes << 20;
    // 64 MiB of random data, fed over and over: more than the CPU's caches hold.
    var random = GC.AllocateUninitializedArray<byte>(64 << 20, pinned: true);
    RandomNumberGenerator.Fill(random);
    var zeros = new byte[Piece];
    Console.WriteLine($"{mebibytes} MiB fed in pieces of {Piece} bytes, {rounds} rounds, medians in seconds per GiB (wall / CPU):");

    Measure("SHA-256 of each 64 KiB block only", size, rounds, () =>
    {
        Span<byte> hash = stackalloc byte[32];
        for (long offset = 0; offset < size; offset += BlockDigestList.BlockSize)
            SHA256.HashData(random.AsSpan((int)(offset % random.Length), BlockDigestList.BlockSize), hash);
    });
    Measure("SHA-256 of each 16 MiB segment only", size, rounds, () =>
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        for (long offset = 0; offset < size; offset += Piece)
        {
            hash.AppendData(random.AsSpan((int)(offset % random.Length), Piece));
            if ((offset + Piece) % BlockDigestList.SegmentSize == 0)
                hash.GetHashAndReset();
        }
    });
    foreach (var twoThreads in new[] { false, true })
    {
        var threads = twoThreads ? "two threads" : "one thread";
        Measure($"builder, random data, {threads}", size, rounds, () => Build(size, twoThreads, offset => new ArraySegment<byte>(random, (int)(offset % random.Length), Piece)));
        Measure($"builder, allocated zeros, {threads}", size, rounds, () => Build(size, twoThreads, _ => new ArraySegment<byte>(zeros)));
    }
    Measure("builder, holes only", size, rounds, () =>
    {
        using var builder = new BlockDigestListBuilder(size);
        builder.Complete();
    });
    return 0;
}

static void Build(long size, bool twoThreads, Func<long, ArraySegment<byte>> piece)
{
    using var builder = new BlockDigestListBuilder(size, twoThreads);
    for (long offset = 0; offset < size;)
    {
        var bytes = piece(offset);
        builder.Append(offset, bytes);
        offset += bytes.Count;
    }
    builder.Complete();
}

static void Measure(string what, long size, int rounds, Action action)
{
    action(); // warm up: the JIT, OpenSSL
    var wall = new List<double>();
    var cpu = new List<double>();
    var gib = size / (double)(1L << 30);
    for (var i = 0; i < rounds; i++)
    {
        var cpuBefore = Process.GetCurrentProcess().TotalProcessorTime;
        var clock = Stopwatch.StartNew();
        action();
        wall.Add(clock.Elapsed.TotalSeconds / gib);
        cpu.Add((Process.GetCurrentProcess().TotalProcessorTime - cpuBefore).TotalSeconds / gib);
    }
    Console.WriteLine($"  {what,-44} {Median(wall),6:0.000} / {Median(cpu),6:0.000}");
}

static double Median(List<double> values)
{
    values.Sort();
    return values[values.Count / 2];
}

static string RuntimeInfo() =>
    $".NET {Environment.Version}, {System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture}, " +
    (File.ReadAllText("/proc/cpuinfo").Contains(" sha_ni", StringComparison.Ordinal) ? "CPU with SHA extensions (sha_ni)" : "CPU without SHA extensions");
