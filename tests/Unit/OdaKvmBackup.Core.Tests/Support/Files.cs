using System.Diagnostics;
using System.Globalization;

namespace OdaKvmBackup.Core.Tests.Support;

/// <summary>Real image files for the tests that copy and measure.</summary>
internal static class Files
{
    public const int MiB = 1 << 20;

    /// <summary>A file of <paramref name="size"/> bytes with non-zero data at the given places; the rest is a hole,
    /// or allocated zeros when <paramref name="allocate"/> (a fully allocated raw vdisk, made with fallocate).</summary>
    public static void Image(string path, long size, IEnumerable<(long Offset, int Length)> data, bool allocate = false, int seed = 42)
    {
        var random = new Random(seed);
        using var stream = new FileStream(path, new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.Write,
            PreallocationSize = allocate ? size : 0,
        });
        stream.SetLength(size);
        foreach (var (offset, length) in data)
        {
            var bytes = new byte[length];
            random.NextBytes(bytes);
            for (var i = 0; i < bytes.Length; i++)
                bytes[i] |= 1; // never zero, so every written byte counts as data
            stream.Position = offset;
            stream.Write(bytes);
        }
        stream.Flush(flushToDisk: true);
    }

    /// <summary>What the file system really allocated: `stat -c %b` (512-byte blocks).</summary>
    public static long AllocatedBytes(string path)
    {
        var start = new ProcessStartInfo("stat", ["-c", "%b", path]) { RedirectStandardOutput = true, UseShellExecute = false };
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        Assert.Equal(0, process.ExitCode);
        return long.Parse(output.Trim(), CultureInfo.InvariantCulture) * 512;
    }

    public static bool SameBytes(string a, string b)
    {
        if (new FileInfo(a).Length != new FileInfo(b).Length)
            return false;
        using var x = File.OpenRead(a);
        using var y = File.OpenRead(b);
        var bx = new byte[MiB];
        var by = new byte[MiB];
        while (true)
        {
            var n = x.ReadAtLeast(bx, MiB, throwOnEndOfStream: false);
            var m = y.ReadAtLeast(by, MiB, throwOnEndOfStream: false);
            if (n != m || !bx.AsSpan(0, n).SequenceEqual(by.AsSpan(0, m)))
                return false;
            if (n < MiB)
                return true;
        }
    }
}
