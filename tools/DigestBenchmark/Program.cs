using System.Diagnostics;
using System.Security.Cryptography;
using OdaKvmBackup.Core.Digests;

[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

// Prints seconds per GiB (median of the rounds; wall clock and CPU time of this process) of:
//   builder: building a block digest list from 1 MiB pieces in memory, as the copy engine feeds it, on one thread
//            and on two, for random data, zeros read from an allocated file, and holes; plus each of the two
//            SHA-256 passes alone.
//   dotnet run -c Release --project tools/DigestBenchmark -- builder [MiB=1024] [rounds=5]
var mode = args.Length > 0 ? args[0] : "builder";
var mebibytes = args.Length > 1 ? int.Parse(args[1]) : 1024;
var rounds = args.Length > 2 ? int.Parse(args[2]) : 5;
Console.WriteLine($"{Environment.ProcessorCount} cores, {RuntimeInfo()}");
return mode switch
{
    "builder" => Builder(mebibytes, rounds),
    _ => Usage(),
};

static int Usage()
{
    Console.Error.WriteLine("usage: DigestBenchmark builder [MiB] [rounds]");
    return 2;
}

static int Builder(int mebibytes, int rounds)
{
    const int Piece = 1 << 20;
    var size = (long)mebibytes << 20;
    // 64 MiB of random data, fed over and over: more than the CPU's caches hold.
    var random = GC.AllocateUninitializedArray<byte>(64 << 20, pinned: true);
    RandomNumberGenerator.Fill(random);
    var zeros = new byte[Piece];
    Console.WriteLine($"{mebibytes} MiB fed in 1 MiB pieces, {rounds} rounds, medians in seconds per GiB (wall / CPU):");

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
    for (long offset = 0; offset < size; offset += 1 << 20)
        builder.Append(offset, piece(offset));
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
