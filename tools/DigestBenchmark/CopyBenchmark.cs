using System.Diagnostics;
using System.Reflection;
using System.Runtime.Loader;
using System.Security.Cryptography;

/// <summary>
/// The copy engine against the floor (issue 15): on two realistic files, a 4 GiB sparse file holding 1 GiB of data
/// (a qcow2 boot disk) and a fully allocated (written) 16 GiB file holding 4 GiB of non-zero data (an ODA raw vdisk),
/// each round drops the page cache (sync; echo 3 > /proc/sys/vm/drop_caches) before each of, in a rotated order:
///   cat FILE > /dev/null                   the floor: any tool that must look at every block reads this much
///   full copy                              SparseCopy.CopyAsync without a base into a new file (sparse, fsynced)
///   full copy, main engine                 the same with the core built from another tree (today's engine), when given,
///                                          without and with the segment digests it took for a copy to an SSH server
///   incremental copy                       SparseCopy.CopyAsync with the base list of the file before 5% of its data
///                                          was rewritten in place, contiguously, into a copy of the base (fsynced)
///   digest list (verify)                   SparseCopy.DigestListAsync: a local copy's verification
/// and prints medians of the wall time (and this process's CPU time) and their ratio to cat's.
///   dotnet run -c Release --project tools/DigestBenchmark -- copy [folder=/var/tmp] [rounds=5] [main core dll] [sizes=boot,vdisk]
/// (sizes may also name "dense": 1 GiB of data and no hole, as in a qcow2 boot disk's file, whose cat reads no zeros.)
/// The files are made in the folder and deleted at the end. Needs root (drop_caches).
/// </summary>
internal static class CopyBenchmark
{
    private const long MiB = 1L << 20;
    private const long GiB = 1L << 30;

    private sealed record Disk(string Name, long Size, long RunLength, long RunEvery, long FirstRun, bool WriteZeros);

    private sealed record Contender(string Name, Func<Task> Run, Action? After = null);

    public static int Run(string folder, int rounds, string? mainCore, string sizes)
    {
        var disks = new List<Disk>();
        // 1 GiB in 128 runs of 8 MiB, one every 32 MiB; the rest holes.
        if (sizes.Contains("boot", StringComparison.Ordinal))
            disks.Add(new Disk("boot (4 GiB sparse, 1 GiB data)", 4 * GiB, 8 * MiB, 32 * MiB, 3 * MiB, WriteZeros: false));
        // 4 GiB in 256 runs of 16 MiB, one every 64 MiB (straddling segments); the rest written zeros.
        if (sizes.Contains("vdisk", StringComparison.Ordinal))
            disks.Add(new Disk("vdisk (16 GiB allocated, 4 GiB data)", 16 * GiB, 16 * MiB, 64 * MiB, 5 * MiB, WriteZeros: true));
        // 1 GiB, all data, no hole: what the file of a qcow2 boot disk holding 1 GiB is (its cat reads no hole).
        if (sizes.Contains("dense", StringComparison.Ordinal))
            disks.Add(new Disk("dense (1 GiB, all data: a qcow2 boot disk's file)", GiB, 8 * MiB, 8 * MiB, 0, WriteZeros: false));
        var main = mainCore is null ? null : MainEngine.Load(mainCore);
        Console.WriteLine($"copy engine in {folder} ({Shell("stat -f -c %T \"$1\"", folder).Trim()}), {rounds} rounds, page cache dropped before each run, " +
            $"medians: wall s (CPU s of this process), ratio of wall to cat's; main engine: {mainCore ?? "not given"}");
        foreach (var disk in disks)
            RunDisk(disk, folder, rounds, main);
        return 0;
    }

    private static void RunDisk(Disk disk, string folder, int rounds, MainEngine? main)
    {
        var source = Path.Combine(folder, $"copy-benchmark-{Environment.ProcessId}.source");
        var baseCopy = Path.Combine(folder, $"copy-benchmark-{Environment.ProcessId}.base");
        var full = Path.Combine(folder, $"copy-benchmark-{Environment.ProcessId}.full");
        try
        {
            var dataBytes = Make(source, disk);
            var baseList = SparseCopy.DigestListAsync(source, null, CancellationToken.None).GetAwaiter().GetResult();
            CopyNew(source, baseCopy, null).GetAwaiter().GetResult();
            // 5% of the data rewritten in place, contiguously, from the first run on.
            var changed = dataBytes / 20;
            Rewrite(source, disk.FirstRun, changed);
            var copyBase = new CopyBase(baseList, new HashSet<long>());
            var contenders = new List<Contender>
            {
                new("cat FILE > /dev/null", () => { Shell("cat \"$1\" > /dev/null", source); return Task.CompletedTask; }),
                new("full copy", () => CopyNew(source, full, null), () => File.Delete(full)),
                new("incremental copy (5% changed)", () => CopyNew(source, baseCopy, copyBase)),
                new("digest list (local verify)", () => SparseCopy.DigestListAsync(source, null, CancellationToken.None)),
            };
            if (main is not null)
            {
                contenders.Insert(2, new("full copy, main engine", () => main.CopyAsync(source, full, false), () => File.Delete(full)));
                // What main's engine hashed for a copy to an SSH server: the segment digests too.
                contenders.Insert(3, new("full copy, main engine, segment digests", () => main.CopyAsync(source, full, true), () => File.Delete(full)));
                contenders.Add(new("content digest, main engine (old verify)", () => main.DigestAsync(source)));
            }
            var wall = contenders.ToDictionary(c => c.Name, _ => new List<double>());
            var cpu = contenders.ToDictionary(c => c.Name, _ => new List<double>());
            for (var round = 0; round < rounds; round++)
            {
                // Rotated each round: whatever else runs on the machine meets each contender at another time.
                for (var i = 0; i < contenders.Count; i++)
                {
                    var contender = contenders[(i + round) % contenders.Count];
                    Shell("sync; echo 3 > /proc/sys/vm/drop_caches");
                    var cpuBefore = Process.GetCurrentProcess().TotalProcessorTime;
                    var clock = Stopwatch.StartNew();
                    contender.Run().GetAwaiter().GetResult();
                    wall[contender.Name].Add(clock.Elapsed.TotalSeconds);
                    cpu[contender.Name].Add((Process.GetCurrentProcess().TotalProcessorTime - cpuBefore).TotalSeconds);
                    contender.After?.Invoke();
                }
            }
            var floor = Median(wall[contenders[0].Name]);
            Console.WriteLine($"  {disk.Name}: {dataBytes / MiB} MiB of data, {changed / MiB} MiB rewritten for the incremental copy");
            foreach (var contender in contenders)
            {
                var w = Median(wall[contender.Name]);
                Console.WriteLine($"    {contender.Name,-42} {w,7:0.000} s ({Median(cpu[contender.Name]),6:0.000} s CPU)  x{w / floor,5:0.00}   " +
                    $"[{string.Join(" ", wall[contender.Name].Select(s => s.ToString("0.00")))}]");
            }
            var check = CopyNew(source, baseCopy, copyBase).GetAwaiter().GetResult();
            Console.WriteLine($"    incremental copy: read {check.BytesRead / MiB} MiB, sent {check.BytesSent / MiB} MiB; " +
                $"copy equal to the source: {Shell("cmp -s \"$1\" \"$2\" && echo yes || echo NO", source, baseCopy).Trim()}");
        }
        finally
        {
            File.Delete(source);
            File.Delete(baseCopy);
            File.Delete(full);
        }
    }

    /// <summary>Writes the disk: runs of random data, and between them holes or written zeros. Returns its data bytes.</summary>
    private static long Make(string path, Disk disk)
    {
        using var file = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 0);
        file.SetLength(disk.Size);
        var random = new byte[MiB];
        var zeros = new byte[MiB];
        long data = 0;
        for (long offset = 0; offset < disk.Size; offset += MiB)
        {
            var inRun = offset >= disk.FirstRun && (offset - disk.FirstRun) % disk.RunEvery < disk.RunLength;
            if (inRun)
            {
                RandomNumberGenerator.Fill(random);
                file.Position = offset;
                file.Write(random);
                data += MiB;
            }
            else if (disk.WriteZeros)
            {
                file.Position = offset;
                file.Write(zeros);
            }
        }
        file.Flush(flushToDisk: true);
        return data;
    }

    private static void Rewrite(string path, long offset, long length)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.None, 0);
        var random = new byte[MiB];
        for (long done = 0; done < length; done += MiB)
        {
            RandomNumberGenerator.Fill(random);
            file.Position = offset + done;
            file.Write(random, 0, (int)Math.Min(MiB, length - done));
        }
        file.Flush(flushToDisk: true);
    }

    /// <summary>A full copy into a new file through the local store's writer, or an incremental one into an existing file.</summary>
    private static async Task<CopyResult> CopyNew(string source, string destination, CopyBase? baseCopy)
    {
        if (baseCopy is null)
        {
            var store = new LocalBackupStore(Path.GetDirectoryName(destination)!);
            await using var writer = await store.CreateFileAsync(Path.GetFileName(destination), CancellationToken.None);
            return await SparseCopy.CopyAsync(source, writer, null, 0, null, CancellationToken.None);
        }
        await using var into = new ExistingFileWriter(destination);
        return await SparseCopy.CopyAsync(source, into, baseCopy, 0, null, CancellationToken.None);
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted[sorted.Count / 2];
    }

    private static string Shell(string script, params string[] arguments)
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

    /// <summary>Writes into an existing file (a clone of the base) without truncating it, fsynced at the end, as a
    /// store's OpenForWriteAsync does.</summary>
    private sealed class ExistingFileWriter(string path) : IStoreFileWriter
    {
        private readonly FileStream _stream = new(path, FileMode.Open, FileAccess.ReadWrite, FileShare.None, 0);

        public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct)
        {
            RandomAccess.Write(_stream.SafeFileHandle, data.Span, offset);
            return ValueTask.CompletedTask;
        }

        public Task CompleteAsync(long size, CancellationToken ct)
        {
            _stream.SetLength(size);
            _stream.Flush(flushToDisk: true);
            return Task.CompletedTask;
        }

        public ValueTask DisposeAsync() => _stream.DisposeAsync();
    }

    /// <summary>Today's engine: SparseCopy and LocalBackupStore of a core built from another tree (main at
    /// 99b89e9), loaded beside this one and called by reflection.</summary>
    private sealed class MainEngine(Type sparseCopy, Type store)
    {
        public static MainEngine Load(string path)
        {
            var context = new AssemblyLoadContext("main engine");
            var assembly = context.LoadFromAssemblyPath(Path.GetFullPath(path));
            return new MainEngine(assembly.GetType("OdaKvmBackup.Core.Copies.SparseCopy", true)!, assembly.GetType("OdaKvmBackup.Core.Stores.LocalBackupStore", true)!);
        }

        public async Task CopyAsync(string source, string destination, bool segmentDigests)
        {
            var root = Activator.CreateInstance(store, [Path.GetDirectoryName(destination)!])!;
            var create = (Task)store.GetMethod("CreateFileAsync")!.Invoke(root, [Path.GetFileName(destination), CancellationToken.None])!;
            await create;
            var writer = create.GetType().GetProperty("Result")!.GetValue(create)!;
            try
            {
                var copy = sparseCopy.GetMethod("CopyAsync", BindingFlags.Public | BindingFlags.Static)!;
                await (Task)copy.Invoke(null, [source, writer, 0L, null, CancellationToken.None, segmentDigests])!;
            }
            finally
            {
                await ((IAsyncDisposable)writer).DisposeAsync();
            }
        }

        public Task DigestAsync(string path) =>
            (Task)sparseCopy.GetMethod("DigestAsync", BindingFlags.Public | BindingFlags.Static)!.Invoke(null, [path, null, CancellationToken.None])!;
    }
}
